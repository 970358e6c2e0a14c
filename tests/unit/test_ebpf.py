"""neuroflow.ebpf without BPF: header folder, syscall table, metric rendering, status, watch bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuroflow.ebpf import top
from neuroflow.ebpf.errors import ProbeOff
from neuroflow.ebpf.headers import build_header_dir, version_code
from neuroflow.ebpf.metrics import NS_BOUNDS, SnapshotCollector, buckets, render
from neuroflow.ebpf.probes import PROBES, cflags, program_text, tracepoint_has_field
from neuroflow.ebpf.registry import Registry
from neuroflow.ebpf.snapshot import Dest, Hist, Snapshot
from neuroflow.ebpf.syscalls import parse_unistd, syscall_name
from neuroflow.ebpf.watch import Link, apply, forget_all
from neuroflow.v1 import supervisor_pb2 as pb


def test_version_code() -> None:
    assert version_code("6.18.44-fc-v782") == (6 << 16) + (18 << 8) + 44
    assert version_code("5.10.300") == (5 << 16) + (10 << 8) + 255


def test_header_dir(tmp_path: Path) -> None:
    uapi = tmp_path / "usr-include"
    (uapi / "linux").mkdir(parents=True)
    (uapi / "linux/types.h").write_text("")
    (uapi / "linux/bpf.h").write_text("#define __LINUX_BPF_H__\n")
    (uapi / "asm-generic").mkdir()
    (uapi / "x86_64-linux-gnu/asm").mkdir(parents=True)
    dest = build_header_dir(tmp_path / "hdr", release="6.1.0", machine="x86_64", uapi_root=uapi)
    assert (dest / "include/uapi/linux/types.h").resolve() == uapi / "linux/types.h"
    assert "BCC brings its own" in (dest / "include/uapi/linux/bpf.h").read_text()  # never the installed one
    assert "typedef __u64 u64;" in (dest / "include/linux/kconfig.h").read_text()
    assert "LINUX_VERSION_CODE 393472" in (dest / "include/generated/uapi/linux/version.h").read_text()
    assert (dest / "arch/x86/include/uapi/asm").resolve() == uapi / "x86_64-linux-gnu/asm"
    build_header_dir(dest, release="6.1.0", machine="x86_64", uapi_root=uapi)  # idempotent


def test_header_dir_without_uapi_headers(tmp_path: Path) -> None:
    with pytest.raises(ProbeOff) as err:
        build_header_dir(tmp_path / "hdr", machine="x86_64", uapi_root=tmp_path)
    assert err.value.code == "no_headers" and "linux-libc-dev" in err.value.message


def test_syscall_table() -> None:
    table = parse_unistd("#define __NR_read 0\n#define __NR_getppid 110\n#define __NR_syscalls 451\n")
    assert table == {0: "read", 110: "getppid"}
    assert syscall_name(110, table) == "getppid" and syscall_name(999, table) == "sys_999"


def test_probe_sources_paste_the_common_header() -> None:
    for spec in PROBES.values():
        text = program_text(spec)
        assert "BPF_HASH(watched, u64, struct nf_watch, NF_MAX_CGROUPS);" in text
        assert '#include "nf_common.h"' not in text


def test_probes_follow_the_kernels_tracepoint_fields(tmp_path: Path) -> None:
    # Debian 12's 6.1 has no sched_process_exit.group_dead; newer kernels do.
    fmt = tmp_path / "events/sched/sched_process_exit/format"
    fmt.parent.mkdir(parents=True)
    fields = ("\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n"
              "\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n")
    fmt.write_text("name: sched_process_exit\nformat:\n" + fields)
    assert tracepoint_has_field("sched:sched_process_exit", "comm", tmp_path)
    assert not tracepoint_has_field("sched:sched_process_exit", "group_dead", tmp_path)
    assert "-DNF_HAVE_GROUP_DEAD=1" not in cflags(PROBES["proc"], latency=False, root=tmp_path)
    fmt.write_text("name: sched_process_exit\nformat:\n" + fields
                   + "\tfield:bool group_dead;\toffset:28;\tsize:1;\tsigned:0;\n")
    assert "-DNF_HAVE_GROUP_DEAD=1" in cflags(PROBES["proc"], latency=False, root=tmp_path)


def test_histogram_buckets_are_cumulative() -> None:
    hist = Hist({9: 2, 10: 3, 12: 1}, total=1000)  # [512, 1024): 2, [1024, 2048): 3, [4096, 8192): 1
    out = dict(buckets(hist, (10, 11, 12, 13), 1.0))
    assert out == {"1024": 2.0, "2048": 5.0, "4096": 5.0, "8192": 6.0, "+Inf": 6.0}
    assert hist.quantile(0.5) == 2048 and hist.quantile(0.99) == 8192 and Hist().quantile(0.5) is None


def test_metrics_rendering() -> None:
    dest = Dest(2, bytes([127, 0, 0, 1]) + bytes(12), 8080)
    snap = Snapshot(ts=1.0, syscalls={(0, 110): 7}, connect={(0, dest): Hist({20: 4}, total=4_000_000)},
                    proc={(0, "exec"): 1}, lost={"proc": 0}, map_full={"syscalls": 2}, run_ns={"syscalls": 5_000_000},
                    run_cnt={"syscalls": 10})
    text = render(SnapshotCollector(lambda: snap, ["calc"].__getitem__)).decode()
    assert 'neuroflow_agent_syscalls_total{agent="calc",syscall="getppid"} 7.0' in text
    assert 'neuroflow_agent_tcp_connect_seconds_count{agent="calc",destination="127.0.0.1:8080"} 4.0' in text
    assert 'neuroflow_agent_tcp_connect_seconds_sum{agent="calc",destination="127.0.0.1:8080"} 0.004' in text
    assert f'le="{2 ** NS_BOUNDS[-1] * 1e-9:.9g}"' in text
    assert 'neuroflow_agent_process_events_total{agent="calc",event="exec"} 1.0' in text
    assert 'neuroflow_ebpf_map_full_total{probe="syscalls"} 2.0' in text
    assert 'neuroflow_ebpf_probe_cpu_seconds_total{probe="syscalls"} 0.005' in text


class FakeProbes:
    """Stands in for ProbeSet's filter maps (the real ones are tested in tests/integration/test_ebpf.py)."""

    def __init__(self) -> None:
        self.watched: dict[int, int] = {}

    def watch(self, cgroup_id: int, agent: int) -> None:
        self.watched[cgroup_id] = agent

    def unwatch(self, cgroup_id: int) -> None:
        self.watched.pop(cgroup_id, None)


def test_watch_events_keep_the_filter_in_step() -> None:
    registry, probes, link = Registry(), FakeProbes(), Link("sock")
    apply(pb.WorkerEvent(kind="add", agent="calc", worker_id="w1", pid=10, cgroup_id=111), registry, probes, link)
    apply(pb.WorkerEvent(kind="add", agent="echo", worker_id="w1", pid=11, cgroup_id=222), registry, probes, link)
    apply(pb.WorkerEvent(kind="add", agent="calc", worker_id="w2", pid=12, cgroup_id=0), registry, probes, link)
    assert probes.watched == {111: 0, 222: 1} and link.no_cgroup == 1
    apply(pb.WorkerEvent(kind="remove", agent="calc", worker_id="w1"), registry, probes, link)
    assert probes.watched == {222: 1}
    forget_all(registry, probes)  # the supervisor went away
    assert probes.watched == {} and registry.workers == {}
    apply(pb.WorkerEvent(kind="add", agent="calc", worker_id="w3", pid=13, cgroup_id=333), registry, probes, link)
    assert probes.watched == {333: 0}  # indices are never reused


def test_status_lines() -> None:
    status = {"pid": 5, "watched_cgroups": 2, "lost_events_total": 0, "map_full_total": 0,
              "probe_cpu_seconds_total": 0.25, "supervisor": {"connected": True},
              "probes": [{"name": "syscalls", "on": True, "detail": "counts only"},
                         {"name": "tcp", "on": False, "code": "tracepoint_missing",
                          "reason": "tracepoint tcp:tcp_probe does not exist on this kernel"}]}
    lines = top.status_lines(status)
    assert "following the supervisor" in lines[0]
    assert lines[1] == "  syscalls    on (counts only)"
    assert lines[2] == "  tcp         off [tracepoint_missing]: tracepoint tcp:tcp_probe does not exist on this kernel"
    assert top.status_lines(None, "not reachable")[0] == "ebpf        off: not reachable"


def test_top_rows() -> None:
    rows = top.top_rows({"calc": {"workers": 2, "requests_per_s": 12.5, "p99_ms": 3.21}},
                        {"agents": {"calc": {"cpu_percent": 3.0, "rss_bytes": 2 * 2**20, "syscalls_per_s": 900.0,
                                             "connect_p99_ms": 0.5, "connects_total": 3}}})
    assert rows == [["calc", "2", "12.5", "3.2", "3.0", "2.0", "900", "0.50", "3"]]


def test_sampled_probe_cost_is_scaled_up_and_only_grows() -> None:
    import asyncio
    from types import SimpleNamespace

    from neuroflow.ebpf.collector import ProbeSet
    from neuroflow.ebpf.daemon import cost_sampler

    probes = ProbeSet(("syscalls",), latency=False, probe_cost=True)
    probes.add_cost({"syscalls": (1_000, 10)}, {"syscalls": (4_000, 40)}, scale=10)
    assert probes.cost_ns == {"syscalls": 30_000} and probes.cost_runs == {"syscalls": 300}
    probes.add_cost({"syscalls": (9_000, 90)}, {"syscalls": (5_000, 50)}, scale=10)  # a reset never subtracts
    assert probes.cost_ns == {"syscalls": 30_000}

    # The sampler: off for (1 - share) x period, then on for share x period; what they counted x 1/share.
    reads = iter([{"syscalls": (0, 0)}, {"syscalls": (500, 5)}, {"syscalls": (500, 5)}, {"syscalls": (900, 9)}])
    on: list[bool] = []

    class Stats:
        fd, error = 3, ""  # on, as the collector leaves them

        def enable(self) -> bool:
            on.append(True)
            self.fd = 3
            return True

        def close(self) -> None:
            on.append(False)
            self.fd = -1

    stats = Stats()
    fake = SimpleNamespace(run_stats=stats, run_counts=lambda: next(reads), cost_ns={}, cost_runs={})
    fake.add_cost = lambda start, end, scale: ProbeSet.add_cost(fake, start, end, scale)  # type: ignore[arg-type]

    async def two_cycles() -> None:
        task = asyncio.create_task(cost_sampler(fake, 0.25, period=0.2))  # type: ignore[arg-type]
        await asyncio.sleep(0.45)  # two periods: 0.15 s off, then 0.05 s on
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(two_cycles())
    assert fake.cost_ns == {"syscalls": 3_600} and fake.cost_runs == {"syscalls": 36}  # (500 + 400) x 4
    assert on[:5] == [False, True, False, True, False]  # off at once, then on only for the windows

    # share 1 (the default): the stats stay on, never switched; each second's count is added as it is.
    reads = iter([{"syscalls": (0, 0)}, {"syscalls": (700, 7)}] + [{"syscalls": (700, 7)}] * 10)
    on.clear()
    stats.fd = 3
    fake.run_counts = lambda: next(reads)
    fake.cost_ns, fake.cost_runs = {}, {}

    async def one_second() -> None:
        task = asyncio.create_task(cost_sampler(fake, 1.0))  # type: ignore[arg-type]
        await asyncio.sleep(1.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(one_second())
    assert fake.cost_ns == {"syscalls": 700} and on == []
