"""What a worker can see and do, probed from inside with harmless calls.

Every probe in tests/agents/lab/probe.py passes the same permission check as
the harmful call it stands for but changes nothing even if the sandbox failed.
"""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any

import pytest

from neuroflow.supervisor.config import runtime_paths
from tests.httpc import invoke
from tests.stack import Stack

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def probe(stack: Stack) -> dict[str, Any]:
    status, body = invoke(stack.url, "lab", {"op": "probe"})
    assert status == 200, body
    return body["output"]


def test_unprivileged_uid_in_the_host_user_namespace(probe: dict[str, Any]) -> None:
    # No user namespace maps the sandbox to host root (DESIGN.md: that would own
    # every root file): the map is the host's own, and the uid is unprivileged.
    assert probe["uid_map"] == [0, 0, 4294967295]
    assert probe["uid"] == probe["euid"] >= 1000 and probe["gid"] >= 1000
    assert probe["groups"] == []


def test_rlimits_back_up_the_cgroup_limits(probe: dict[str, Any]) -> None:
    limits = probe["rlimits"]
    assert limits["CORE"] == 0 and limits["NOFILE"] == 1024 and limits["FSIZE"] == 64 * 1024 * 1024
    assert limits["AS"] == 96 * 1024 * 1024 + (1 << 30)  # the lab agent's 96 MiB + room for mappings
    assert limits["CPU"] == 3  # cpu_seconds 2, SIGKILL one second after SIGXCPU


def test_no_capabilities_no_new_privs_seccomp_on(probe: dict[str, Any]) -> None:
    assert int(probe["cap_eff"], 16) == int(probe["cap_prm"], 16) == int(probe["cap_bnd"], 16) == 0
    assert probe["no_new_privs"] == "1"
    assert probe["seccomp"] == "2"


def test_pid_namespace_hides_host_processes(probe: dict[str, Any]) -> None:
    assert max(probe["visible_pids"]) < 100, probe["visible_pids"]
    assert 1 in probe["visible_pids"]  # the zygote is pid 1 inside


def test_network_namespace_has_only_loopback(probe: dict[str, Any]) -> None:
    assert probe["net_ifaces"] == ["lo"]
    assert probe["socket_inet"] == "EAFNOSUPPORT"
    assert probe["socket_netlink"] == "EAFNOSUPPORT"
    assert probe["socket_unix"].startswith("ok")


def test_minimal_read_only_root(probe: dict[str, Any]) -> None:
    # The Python runtime and the checkout's virtualenv are bound at their host
    # paths, so their first components (/usr, /work, /tmp/ci-clone …) show up.
    runtime_tops = {PurePath(p).parts[1] for p in runtime_paths()}
    assert set(probe["root_entries"]) <= {
        "app", "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr",
    } | runtime_tops
    assert "sys" not in probe["root_entries"] and "boot" not in probe["root_entries"]
    assert probe["dev_entries"] == ["fd", "null", "random", "stderr", "stdin", "stdout", "urandom", "zero"]
    assert "shadow" not in probe["etc_entries"] and probe["read_shadow"] == "ENOENT"
    mounts = probe["mounts"]
    for point in ("/", "/app", "/usr", "/dev", "/proc/sys"):
        assert "ro" in mounts[point], (point, mounts[point])
    assert "rw" in mounts["/tmp"] and "nosuid" in mounts["/tmp"]
    assert all({"nosuid", "noexec"} <= set(mounts[f"/dev/{d}"]) for d in ("null", "zero", "urandom"))
    # Files are also not writable by the sandbox's uid; either refusal will do.
    assert probe["write_app"] in ("EROFS", "EACCES")
    assert probe["write_usr"] in ("EROFS", "EACCES")
    assert probe["write_tmp"].startswith("ok")
    assert probe["core_pattern"] in ("EROFS", "EACCES")


def test_dangerous_syscalls_are_refused(probe: dict[str, Any]) -> None:
    for key in ("mount", "unshare_user", "unshare_net", "ptrace_self_peek", "reboot_bad_magic",
                "settime_same", "sethostname_same", "bpf"):
        assert probe[key] == "EPERM", (key, probe[key])


def test_hostname_is_the_agent_name(probe: dict[str, Any]) -> None:
    assert probe["hostname"] == "lab"


def test_agents_run_as_different_uids(stack: Stack) -> None:
    uids = set()
    for agent in ("lab", "echo"):
        for pid in stack.worker_pids(agent):
            with open(f"/proc/{pid}/status") as f:
                uids |= {line.split()[1] for line in f if line.startswith("Uid:")}
    assert len(uids) == 2 and "0" not in uids


def test_workers_are_not_dumpable_and_die_with_the_supervisor(stack: Stack) -> None:
    for pid in stack.worker_pids("lab"):
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert status["NoNewPrivs"].strip() == "1"
        assert status["Seccomp"].strip() == "2"
        # Not dumpable: /proc/PID/mem and ptrace are closed even to the same uid;
        # the kernel then makes /proc/PID files owned by root.
        assert os.stat(f"/proc/{pid}/mem").st_uid == 0
