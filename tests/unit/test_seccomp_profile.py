import pytest

from neuroflow.sdk.manifest import ManifestError
from neuroflow.supervisor.sandbox import seccomp


def test_default_profile_compiles() -> None:
    profile = seccomp.load_profile("default")
    assert {"ptrace", "mount", "bpf", "unshare", "io_uring_setup"} <= set(profile.deny)
    assert profile.socket_families == (1,)  # AF_UNIX
    seccomp.build_filter(profile)  # compiles without loading


def test_unknown_syscalls_are_skipped_and_families_checked() -> None:
    profile = seccomp.parse_profile({"deny": ["not_a_syscall", "ptrace"]}, "p.yaml")
    seccomp.build_filter(profile)
    with pytest.raises(ManifestError, match="unknown address family"):
        seccomp.parse_profile({"deny": [], "socket_families": ["AF_NOPE"]}, "p.yaml")


def test_missing_profile_is_a_clear_error() -> None:
    with pytest.raises(ManifestError, match="seccomp profile 'nope' does not exist"):
        seccomp.load_profile("nope")
