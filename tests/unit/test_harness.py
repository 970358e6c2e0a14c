"""The worker harness, run standalone (no sandbox, no root) over real pipes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuroflow.sdk.framing import FrameDecoder, encode
from neuroflow.v1 import worker_pb2 as wpb

AGENT = '''
import asyncio, os, sys
from neuroflow.sdk import Agent, AgentError, Response

class A(Agent):
    async def handle(self, request, context):
        op = request.input["op"]
        if op == "sleep":
            await asyncio.sleep(request.input["s"])
            return Response(output=request.input["s"])
        if op == "print":
            print("hello from print")
            os.write(1, b"raw fd 1\\n")
            context.log("structured", level="warning", k=1)
            return Response(output="done")
        if op == "refuse":
            raise AgentError("nope", "refused")
        if op == "raise":
            raise KeyError("boom")
        if op == "bad":
            return {"not": "a Response"}
        if op == "cfg":
            return Response(output=dict(context.config))
'''


class Worker:
    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "neuroflow.sdk.harness", str(folder)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.decoder = FrameDecoder()
        self.frames: list[wpb.FromWorker] = []

    def send(self, frame: wpb.ToWorker) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode(frame))
        self.proc.stdin.flush()

    def next(self, kind: str, timeout: float = 10) -> wpb.FromWorker:
        import select

        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if f.WhichOneof("kind") == kind:
                    return self.frames.pop(i)
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind} frame; have {self.frames}"
            if select.select([self.proc.stdout], [], [], remaining)[0]:
                import os

                data = os.read(self.proc.stdout.fileno(), 65536)
                assert data, f"worker exited: {self.proc.wait()} {self.proc.stderr.read()!r}"  # type: ignore[union-attr]
                self.frames += [wpb.FromWorker.FromString(b) for b in self.decoder.feed(data)]

    def invoke(self, fid: int, value: object) -> None:
        self.send(wpb.ToWorker(invoke=wpb.InvokeRequest(id=fid, request_id=f"r{fid}",
                                                        input_json=json.dumps(value).encode())))


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "agent.yaml").write_text("name: a\nversion: '1'\nentry: agent:A\n")
    w = Worker(tmp_path)
    w.send(wpb.ToWorker(start=wpb.Start(agent="a", version="1", worker_id="w1",
                                        config_json=b'{"x": 1}')))
    assert w.next("ready").ready.pid > 0
    yield w
    if w.proc.poll() is None:
        w.proc.kill()
    w.proc.wait()
    for stream in (w.proc.stdin, w.proc.stdout, w.proc.stderr):
        stream.close()  # type: ignore[union-attr]


def test_requests_run_concurrently_and_reply_by_id(worker: Worker) -> None:
    started = time.monotonic()
    worker.invoke(1, {"op": "sleep", "s": 0.5})
    worker.invoke(2, {"op": "sleep", "s": 0.1})
    first, second = worker.next("result").result, worker.next("result").result
    assert (first.id, second.id) == (2, 1)
    assert json.loads(second.output_json) == 0.5
    assert time.monotonic() - started < 0.9


def test_prints_become_log_frames_and_raw_writes_go_to_stderr(worker: Worker) -> None:
    worker.invoke(1, {"op": "print"})
    assert json.loads(worker.next("result").result.output_json) == "done"
    logs = [worker.next("log").log for _ in range(2)]
    by_stream = {rec.stream: rec for rec in logs}
    assert by_stream["stdout"].message == "hello from print" and by_stream["stdout"].id == 1
    assert by_stream["log"].level == "warning" and by_stream["log"].fields["k"] == "1"
    worker.send(wpb.ToWorker(shutdown=wpb.Shutdown()))
    assert worker.proc.wait(10) == 0
    assert b"raw fd 1" in worker.proc.stderr.read()  # type: ignore[union-attr]


def test_errors_carry_codes_and_the_worker_keeps_serving(worker: Worker) -> None:
    for fid, op in enumerate(["refuse", "raise", "bad"], start=1):
        worker.invoke(fid, {"op": op})
    results = {r.id: r.error for r in (worker.next("result").result for _ in range(3))}
    assert (results[1].code, results[1].message) == ("nope", "refused")
    assert results[2].code == "agent_error" and "KeyError" in results[2].message
    assert results[3].code == "agent_error" and "expected neuroflow.sdk.Response" in results[3].message
    worker.invoke(4, {"op": "cfg"})
    assert json.loads(worker.next("result").result.output_json) == {"x": 1}


def test_cancel_answers_cancelled(worker: Worker) -> None:
    worker.invoke(1, {"op": "sleep", "s": 30})
    time.sleep(0.1)
    worker.send(wpb.ToWorker(cancel=wpb.Cancel(id=1)))
    assert worker.next("result").result.error.code == "cancelled"


def test_bad_frame_from_supervisor_exits_with_protocol_error(worker: Worker) -> None:
    assert worker.proc.stdin is not None
    worker.proc.stdin.write(b"\x00\x00\x00\x03\xff\xff\xff")
    worker.proc.stdin.flush()
    assert worker.proc.wait(10) == 3
    assert b"bad frame from supervisor" in worker.proc.stderr.read()  # type: ignore[union-attr]


def test_eof_on_stdin_ends_the_worker(worker: Worker) -> None:
    worker.proc.stdin.close()  # type: ignore[union-attr]
    assert worker.proc.wait(10) == 0
