"""The calc example: its safe evaluator and its agent, called without a worker."""

# The full-width digits, brackets and signs below are the point of these tests.

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pytest

CALC_DIR = Path(__file__).resolve().parents[2] / "examples" / "calc"
sys.path.insert(0, str(CALC_DIR))  # "calc" is a folder, not a package: import by plain name

import evaluator  # noqa: E402
from evaluator import MAX_DEPTH, MAX_INT_DIGITS, MAX_LENGTH, CalcError, evaluate  # noqa: E402

from neuroflow.sdk import AgentError, Request, Response  # noqa: E402
from neuroflow.sdk.context import Context  # noqa: E402
from neuroflow.sdk.manifest import load_manifest  # noqa: E402

# Loaded under a unique name so that another example's "agent" module cannot clash.
_spec = importlib.util.spec_from_file_location("calc_agent", CALC_DIR / "agent.py")
assert _spec is not None and _spec.loader is not None
calc_agent = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calc_agent)


def error_of(expr: str) -> CalcError:
    with pytest.raises(CalcError) as info:
        evaluate(expr)
    return info.value


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # precedence
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 * 3 ** 2", 18),
        ("10 - 4 - 3", 3),  # left-associative
        ("100 / 10 / 5", 2),
        ("2 ** 3 ** 2", 512),  # right-associative
        ("(2 ** 3) ** 2", 64),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("-7 % 3", 2),  # Python's sign convention
        ("1 + 10 % 4 * 2", 5),
        # unary signs
        ("-2 ** 2", -4),
        ("(-2) ** 2", 4),
        ("2 ** -1", 0.5),
        ("2 ** -2 ** 2", 1 / 16),
        ("--3", 3),
        ("-+-3", 3),
        ("+5", 5),
        ("3 - -2", 5),
        ("-(1 + 2) * 3", -9),
        # literals
        ("42", 42),
        ("0.5", 0.5),
        (".5 + 1.", 1.5),
        ("1e3", 1000.0),
        ("2.5E-3", 0.0025),
        ("1e+2", 100.0),
        ("007", 7),
        # functions and constants
        ("sqrt(16)", 4),
        ("sqrt(2)", math.sqrt(2)),
        ("sqrt(2.25)", 1.5),
        ("abs(-3)", 3),
        ("abs(-2.5)", 2.5),
        ("round(2.5)", 2),  # banker's rounding, as in Python
        ("round(3.14159, 2)", 3.14),
        ("round(1234, -2)", 1200),
        ("min(3, 1, 2)", 1),
        ("max(3, 1.5, -2)", 3),
        ("max(4)", 4),
        ("floor(-2.5)", -3),
        ("ceil(2.1)", 3),
        ("log(e)", 1.0),
        ("log(8, 2)", 3.0),
        ("log10(1000)", 3.0),
        ("log2(1024)", 10.0),
        ("exp(0)", 1.0),
        ("sin(0)", 0.0),
        ("cos(pi)", -1.0),
        ("tan(0)", 0.0),
        ("pi", math.pi),
        ("e", math.e),
        ("2 * pi", 2 * math.pi),
        ("SQRT(9) + Pi - PI", 3),
        ("max(1, min(5, 3), sqrt(4)) ** 2", 9),
        ("  1\t+\n2  ", 3),
        ("2 ^ 10", 1024),
    ],
)
def test_values(expr: str, expected: float) -> None:
    assert evaluate(expr) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("expr", "expected", "kind"),
    [
        ("2 ** 100", 2**100, int),
        ("6 / 3", 2, int),
        ("7 / 2", 3.5, float),
        ("-9 / 3", -3, int),
        ("6.0 / 3", 2.0, float),
        ("10 ** 20 + 1", 10**20 + 1, int),
        ("(10 ** 30 + 1) * 3 / 3", 10**30 + 1, int),
        ("sqrt(10 ** 40)", 10**20, int),
        ("floor(2.7)", 2, int),
        ("round(2.7)", 3, int),
        ("1e2", 100.0, float),
    ],
)
def test_integers_stay_exact(expr: str, expected: float, kind: type) -> None:
    result = evaluate(expr)
    assert result == expected
    assert type(result) is kind


def test_largest_integers_are_exact_and_json_serialisable() -> None:
    result = evaluate(f"10 ** {MAX_INT_DIGITS - 1}")
    assert result == 10 ** (MAX_INT_DIGITS - 1)
    assert len(json.dumps(result)) == MAX_INT_DIGITS


# --- unicode ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("３ × ４", 12),
        ("１２ ÷ ４", 3),
        ("7 ÷ 2", 3.5),
        ("（１＋２）×３", 9),
        ("５\u2212２", 3),  # MINUS SIGN
        ("２＊＊１０", 1024),
        ("max（１，２）", 2),
        ("１\u3000＋\u3000１", 2),  # ideographic spaces
        ("3²", 9),
        ("2³²", 2**32),  # a run of superscripts is one exponent
        ("10⁻²", 0.01),
        ("\u0663 + 1", 4),  # ARABIC-INDIC DIGIT THREE
        ("ｓｑｒｔ（１６）", 4),
    ],
)
def test_unicode_input(expr: str, expected: float) -> None:
    assert evaluate(expr) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("expr", "position"),
    [
        ("2₃", 2),  # a subscript must not silently become the digit 3 (23)
        ("1½", 2),  # nor ½ become 1/2 glued onto the 1 (11/2)
        ("3 加 5", 3),
        ("1 + x²", 5),
    ],
)
def test_unicode_that_would_change_meaning_is_refused(expr: str, position: int) -> None:
    err = error_of(expr)
    assert err.code in ("syntax_error", "unknown_name")
    assert err.position == position


def test_positions_refer_to_the_original_text() -> None:
    err = error_of("（１＋）")  # the full-width ")" is the 4th character
    assert (err.code, err.position) == ("syntax_error", 4)
    assert "at position 4" in str(err)
    err = error_of("１０ ÷ ０")
    assert (err.code, err.position) == ("division_by_zero", 4)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "code", "position"),
    [
        ("", "syntax_error", None),
        ("   ", "syntax_error", None),
        ("1 +", "syntax_error", 4),
        ("(1 + 2", "syntax_error", 7),
        ("1 + 2)", "syntax_error", 6),
        ("1 2", "syntax_error", 3),
        ("1.5.2", "syntax_error", 4),
        ("2pi", "syntax_error", 2),
        ("1e", "syntax_error", 2),
        ("* 3", "syntax_error", 1),
        ("1 ** * 2", "syntax_error", 6),
        ("1, 2", "syntax_error", 2),
        ("()", "syntax_error", 2),
        ("max()", "syntax_error", 5),
        ("sqrt(1, 2)", "syntax_error", 1),
        ("round(1, 2, 3)", "syntax_error", 1),
        ("1 & 2", "syntax_error", 3),
        ("__import__(1)", "unknown_function", 1),
        ("print('hi')", "syntax_error", 7),
        ("1 + foo(2)", "unknown_function", 5),
        ("x + 1", "unknown_name", 1),
        ("sqrt", "unknown_name", 1),
        ("inf", "unknown_name", 1),
        ("nan", "unknown_name", 1),
        ("1 / 0", "division_by_zero", 3),
        ("1 // 0", "division_by_zero", 3),
        ("1 % 0", "division_by_zero", 3),
        ("1.5 / 0.0", "division_by_zero", 5),
        ("0 ** -1", "division_by_zero", 3),
        ("sqrt(-1)", "domain_error", 1),
        ("log(0)", "domain_error", 1),
        ("log(-5)", "domain_error", 1),
        ("(-8) ** (1 / 3)", "domain_error", 6),  # Python's ** would return a complex
        ("round(1.5, 0.5)", "domain_error", 1),
        ("1e999", "too_large", 1),
        ("1e308 * 10", "too_large", 7),
        ("2.0 ** 2000", "too_large", 5),
        ("exp(1000)", "too_large", 1),
        ("10 ** 400 + 0.5", "too_large", 11),
        (f"10 ** {MAX_INT_DIGITS}", "too_large", 4),
    ],
)
def test_errors(expr: str, code: str, position: int | None) -> None:
    err = error_of(expr)
    assert err.code == code
    assert err.position == position
    assert isinstance(err, ValueError)
    message = str(err)
    assert message
    if position is not None:
        assert message.endswith(f"at position {position}")


def test_error_messages_name_the_problem() -> None:
    assert "expected ')'" in str(error_of("(1 + 2"))
    assert "end of the expression" in str(error_of("1 +"))
    assert "'foo'" in str(error_of("foo(1)")) and "sqrt" in str(error_of("foo(1)"))
    assert "'x'" in str(error_of("x"))
    assert "'&'" in str(error_of("1 & 2"))
    assert "sqrt() takes 1 argument(s), got 2" in str(error_of("sqrt(1, 2)"))


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        evaluate(42)  # type: ignore[arg-type]


def test_nan_is_a_domain_error() -> None:
    # No supported operation produces NaN from finite numbers; the guard is still there.
    with pytest.raises(CalcError) as info:
        evaluator._check(math.nan, 0, lambda index: index + 1)
    assert info.value.code == "domain_error"


# --- abuse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "code"),
    [
        ("9 ** 9 ** 9", "too_large"),
        ("9 ** 9 ** 9 ** 9", "too_large"),
        ("10 ** 10 ** 10", "too_large"),
        ("2 ** 2 ** 2 ** 2 ** 2 ** 2", "too_large"),
        ("(-3) ** 100000", "too_large"),
        ("2 ** 13000 * 2 ** 13000", "too_large"),
        ("10 ** 3999 * 10 ** 3999", "too_large"),
        ("10 ** 3999 // 3 * 10 ** 3999", "too_large"),
        ("2.5 ** 10 ** 100", "too_large"),
        ("1 + " * 249 + "1", None),  # long, flat chains are fine
        ("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH, None),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "too_deep"),
        ("(" * 400 + "1" + ")" * 400, "too_deep"),
        ("-" * 999 + "1", "too_deep"),
        ("-" * MAX_DEPTH + "1", None),
        ("-" * (MAX_DEPTH + 1) + "1", "too_deep"),
        ("2 **" * 200 + "2", "too_deep"),
        ("sqrt(" * 100 + "1" + ")" * 100, "too_deep"),
        ("1" * (MAX_LENGTH + 1), "too_long"),
        ("1 + " * 10_000, "too_long"),
        ("\ufdfa" * 200, "too_long"),  # one character that NFKC expands to 18
        ("10 ** 3999 * 10 ** 3999 * 10 ** 3999", "too_large"),
    ],
)
def test_abuse_is_refused_quickly(expr: str, code: str | None) -> None:
    start = time.perf_counter()
    if code is None:
        evaluate(expr)
    else:
        assert error_of(expr).code == code
    assert time.perf_counter() - start < 0.5


def test_big_but_allowed_power_is_computed() -> None:
    assert evaluate("2 ** 13000") == 2**13000
    assert evaluate("1 ** 10 ** 100") == 1
    assert evaluate("(-1) ** (10 ** 100 + 1)") == -1
    assert evaluate("0 ** (10 ** 100)") == 0


def test_evaluator_uses_no_dynamic_code() -> None:
    tree = ast.parse((CALC_DIR / "evaluator.py").read_text(encoding="utf-8"))
    forbidden = {"eval", "exec", "compile", "literal_eval", "__import__", "getattr"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else ""
            if isinstance(func, ast.Attribute) and not (
                isinstance(func.value, ast.Name) and func.value.id == "re"  # re.compile is fine
            ):
                name = func.attr
            assert name not in forbidden, f"line {node.lineno} calls {name}()"


# --- the agent ----------------------------------------------------------------------------


def run(input_value: Any) -> tuple[Response, list[Any]]:
    frames: list[Any] = []
    ctx = Context(
        emit=frames.append, frame_id=1, request_id="r1", session=None,
        agent="calc", version="1.0", worker_id="w1", config={},
    )
    request = Request(input=input_value, request_id="r1")
    return asyncio.run(calc_agent.Calc().handle(request, ctx)), frames


def run_error(input_value: Any) -> tuple[AgentError, list[Any]]:
    frames: list[Any] = []
    ctx = Context(
        emit=frames.append, frame_id=1, request_id="r1", session=None,
        agent="calc", version="1.0", worker_id="w1", config={},
    )
    with pytest.raises(AgentError) as info:
        asyncio.run(calc_agent.Calc().handle(Request(input=input_value, request_id="r1"), ctx))
    return info.value, frames


def test_agent_evaluates_a_string() -> None:
    response, _ = run("17 * 23")
    assert response.output == {"expression": "17 * 23", "result": 391}
    json.dumps(response.output)


def test_agent_evaluates_an_object() -> None:
    response, _ = run({"expression": "（１＋２）×３"})
    assert response.output == {"expression": "（１＋２）×３", "result": 9}


def test_agent_logs_and_counts_once() -> None:
    _, frames = run("1 + 1")
    assert len(frames) == 2
    log, metric = frames[0].log, frames[1].metric
    assert frames[0].HasField("log") and frames[1].HasField("metric")
    assert log.message == "evaluated"
    assert log.fields["expression_length"] == "5"
    assert metric.name == "calc.evaluations"
    assert metric.value == 1.0


@pytest.mark.parametrize(
    "bad", [None, 42, 1.5, True, [], ["1 + 1"], {}, {"expr": "1"}, {"expression": 5}]
)
def test_agent_refuses_other_input(bad: Any) -> None:
    err, frames = run_error(bad)
    assert err.code == "invalid_input"
    assert "expression" in err.message
    assert frames == []


@pytest.mark.parametrize(
    ("expr", "code"),
    [
        ("1 / 0", "division_by_zero"),
        ("1 +", "syntax_error"),
        ("9 ** 9 ** 9", "too_large"),
        ("foo(1)", "unknown_function"),
        ("x" * (MAX_LENGTH + 1), "too_long"),
    ],
)
def test_agent_maps_calc_errors(expr: str, code: str) -> None:
    err, frames = run_error({"expression": expr})
    assert err.code == code
    assert err.message == str(error_of(expr))
    assert len(frames) == 2  # still logged and counted once
    assert frames[1].metric.attributes["outcome"] == code


def test_agent_metadata_and_manifest_agree() -> None:
    manifest = load_manifest(CALC_DIR / "agent.yaml")
    assert manifest.name == calc_agent.Calc.metadata["name"] == "calc"
    assert manifest.version == calc_agent.Calc.metadata["version"] == "1.0"
    assert manifest.entry == "agent:Calc"
    assert manifest.limits.timeout == 5.0
    assert manifest.limits.memory == 128 * 1024**2
    assert (manifest.pool.min, manifest.pool.max) == (1, 4)
    assert 6 <= len(manifest.examples) <= 10
    assert any(not example.isascii() for example in manifest.examples)  # Chinese examples too
