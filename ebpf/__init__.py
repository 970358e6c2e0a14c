"""``neuroflow-ebpf``: BCC tracepoint probes of the agents' syscalls, TCP connects and processes.

The daemon (``neuroflow.ebpf.main``) follows the supervisor's workers over gRPC,
filters in the kernel by their cgroup v2 ids and serves Prometheus ``/metrics``
and ``/status`` on a loopback port. ``neuroflow.ebpf.top`` is what ``nfctl``
reads from it.
"""

from neuroflow.ebpf.errors import REASONS, ProbeOff

__all__ = ["REASONS", "ProbeOff"]
