"""Why a probe is off: a stable code and a sentence, shown by ``/status`` and ``nfctl status``."""

from __future__ import annotations

# Stable codes (documented in the README's eBPF section).
REASONS = {
    "not_root": "the daemon is not root (needs CAP_BPF and CAP_PERFMON or CAP_SYS_ADMIN)",
    "bcc_missing": "BCC (python3-bpfcc) is not installed or does not import",
    "no_headers": "no kernel headers and no uapi headers to build a minimal header folder",
    "compile_failed": "the probe's C program did not compile or load",
    "tracepoint_missing": "a tracepoint the probe needs does not exist on this kernel",
    "attach_failed": "the kernel refused to attach the probe",
    "disabled": "switched off by configuration",
    "no_kprobes": "this kernel has no kprobes",
}


class ProbeOff(Exception):
    """A probe (or all of them) cannot run; ``code`` is one of :data:`REASONS`."""

    def __init__(self, code: str, message: str) -> None:
        assert code in REASONS, code
        super().__init__(message)
        self.code = code
        self.message = message
