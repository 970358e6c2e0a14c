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


def test_strict_profile_is_an_allow_list_that_compiles() -> None:
    profile = seccomp.load_profile("strict")
    assert profile.is_allow_list and "read" in profile.allow and "execve" not in profile.allow
    assert "ptrace" not in profile.allow and "mount" not in profile.allow
    seccomp.build_filter(profile)
    seccomp.build_filter(profile, notify=False)


def test_a_profile_is_either_a_deny_or_an_allow_list() -> None:
    for raw in ({"deny": [], "allow": []}, {}, {"allow": "read"}):
        with pytest.raises(ManifestError, match="either a 'deny' or an 'allow' list"):
            seccomp.parse_profile(raw, "p.yaml")
    assert seccomp.profile_names() == ["default", "strict"]


def test_refusals_look_like_what_the_kernel_says_for_missing_features() -> None:
    import errno

    assert seccomp.refusal_errno("socket") == errno.EAFNOSUPPORT
    assert seccomp.refusal_errno("mount") == errno.EPERM
    assert seccomp.syscall_name(0xC000003E, 41) == "socket"  # AUDIT_ARCH_X86_64
