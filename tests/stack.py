"""Start a real supervisor and gateway for tests and benchmarks.

    with Stack(agents=[Path("examples/echo")], workdir=tmp) as stack:
        requests.post(stack.url + "/v1/agents/echo/invoke", json={"input": 1})

Each Stack gets its own cgroup instance name, state folder and socket, so it
never touches another supervisor's groups; everything is removed on exit.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import grpc

from neuroflow.v1 import supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc

BIN = Path(sys.executable).parent


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, agents: list[Path], workdir: Path, *, config: dict | None = None,
                 instance: str | None = None, start_timeout: float = 60.0,
                 gateway_args: tuple[str, ...] = ("--no-router",)) -> None:
        self.workdir = Path(workdir)
        self.instance = instance or f"test-{secrets.token_hex(4)}"
        self.agents_dir = self.workdir / "agents"
        self.state_dir = self.workdir / "state"
        self.socket = self.workdir / "supervisor.sock"
        self.start_timeout = start_timeout
        self.config = config or {}
        self.gateway_args = gateway_args
        self.url = ""
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []
        self.agents_dir.mkdir(parents=True, exist_ok=True)
        for agent in agents:
            shutil.copytree(agent, self.agents_dir / Path(agent).name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))

    # -- processes -----------------------------------------------------------
    def _log(self, name: str) -> IO[bytes]:
        f = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop())
        self._logs.append(f)
        return f

    def start_supervisor(self) -> None:
        import yaml

        config_file = self.workdir / "supervisor.yaml"
        config_file.write_text(yaml.safe_dump({
            "state_dir": str(self.state_dir), "agents_dirs": [str(self.agents_dir)],
            "socket": str(self.socket), "instance": self.instance, **self.config,
        }))
        self.supervisor = subprocess.Popen(
            [*delegated_scope(f"neuroflow-{self.instance}"), str(BIN / "neuroflow-supervisor"),
             "--config", str(config_file)],
            stdout=self._log("supervisor"), stderr=subprocess.STDOUT,
        )
        self.wait_supervisor()

    def wait_supervisor(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.supervisor is not None and self.supervisor.poll() is not None:
                raise StackError(f"supervisor exited with {self.supervisor.returncode}:\n{self.log_text('supervisor')}")
            if self.socket.exists():
                try:
                    self.status(timeout=1)
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise StackError(f"supervisor not ready in {self.start_timeout} s:\n{self.log_text('supervisor')}")

    def start_gateway(self, *extra: str) -> None:
        log = self.workdir / "gateway.log"
        self.gateway = subprocess.Popen(
            [str(BIN / "neuroflow-gateway"), "--listen", "127.0.0.1:0", "--supervisor", str(self.socket), *extra],
            stdout=self._log("gateway"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://\S+)", log.read_text() if log.exists() else "")
            if match:
                self.url = match.group(1)
                if self.supervisor is not None:
                    self.wait_ready(self.start_timeout)  # connected to the supervisor
                return
            if self.gateway.poll() is not None:
                raise StackError(f"gateway exited with {self.gateway.returncode}:\n{self.log_text('gateway')}")
            time.sleep(0.05)
        raise StackError(f"gateway did not start:\n{self.log_text('gateway')}")

    def wait_ready(self, timeout: float = 20) -> None:
        """Until the gateway answers /readyz (it reconnects after a supervisor restart)."""
        from tests.httpc import request

        deadline = time.monotonic() + timeout
        while request(f"{self.url}/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise StackError(f"gateway not ready in {timeout} s:\n{self.log_text('gateway')}")
            time.sleep(0.05)

    def stop_supervisor(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.supervisor is None:
            return None
        if self.supervisor.poll() is None:
            self.supervisor.send_signal(sig)
            try:
                self.supervisor.wait(timeout)
            except subprocess.TimeoutExpired:
                self.supervisor.kill()
                self.supervisor.wait()
        code = self.supervisor.returncode
        self.supervisor = None
        return code

    def stop(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.terminate()
            try:
                self.gateway.wait(10)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait()
        self.stop_supervisor()
        for f in self._logs:
            f.close()

    def __enter__(self) -> Stack:
        try:
            self.start_supervisor()
            self.start_gateway(*self.gateway_args)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------
    def log_text(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stub(self) -> pb_grpc.SupervisorStub:
        return pb_grpc.SupervisorStub(grpc.insecure_channel(f"unix:{self.socket}"))

    def status(self, timeout: float = 5) -> pb.StatusReply:
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            return pb_grpc.SupervisorStub(channel).Status(pb.StatusRequest(), timeout=timeout)

    def cgroup_base(self) -> Path:
        """This supervisor's ``neuroflow.<instance>`` group (pids hierarchy on v1, else v2)."""
        assert self.supervisor is not None
        lines = Path(f"/proc/{self.supervisor.pid}/cgroup").read_text().splitlines()
        own = {c: path for _, controllers, path in (line.split(":", 2) for line in lines)
               for c in controllers.split(",")}
        if own.get("pids") is not None and Path("/sys/fs/cgroup/pids").is_dir():
            return Path("/sys/fs/cgroup/pids" + own["pids"].rstrip("/")) / f"neuroflow.{self.instance}"
        path = own[""].rstrip("/")
        if path.endswith("/supervisor"):  # v2: it moved itself into a leaf of its own group
            path = path[: -len("/supervisor")]
        return Path("/sys/fs/cgroup" + path) / f"neuroflow.{self.instance}"

    def worker_pids(self, agent: str) -> list[int]:
        """Host pids of the agent's workers (from its cgroup leaves)."""
        pids = []
        for leaf in self.cgroup_base().glob(f"{agent}.*/w*"):
            pids += [int(p) for p in (leaf / "cgroup.procs").read_text().split()]
        return pids


def delegated_scope(name: str) -> list[str]:
    """Under systemd, run in a scope of our own with ``Delegate=yes``.

    On cgroup v2 the supervisor may only enable controllers for its subtree if
    its cgroup holds no other process (the "no internal processes" rule): a
    test runner's cgroup does, a fresh delegated scope does not.
    """
    if not Path("/run/systemd/system").is_dir():
        return []
    return ["systemd-run", "--scope", "--quiet", "--collect", "-p", "Delegate=yes", f"--unit={name}-{os.getpid()}"]


def cgroup_dirs(instance: str) -> list[Path]:
    """Every cgroup directory this instance may have created (for leak checks)."""
    # os.walk, not Path.glob: systemd may remove a scope while we walk it.
    name = f"neuroflow.{instance}"
    return [Path(top) / name for top, dirs, _ in os.walk("/sys/fs/cgroup") if name in dirs]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
