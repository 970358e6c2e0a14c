"""seccomp: named profiles in YAML, compiled with libseccomp (pyseccomp).

A profile is built in the launcher before any agent code exists and loaded as
the very last step of containment (see ``sandbox.contain``), after which the
filter applies to the zygote and every worker it forks.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyseccomp as sc
import yaml

from neuroflow.sdk.manifest import ManifestError

_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


@dataclass(frozen=True)
class Profile:
    name: str
    deny: tuple[str, ...]
    socket_families: tuple[int, ...]
    deny_namespace_clone: bool


def load_profile(name: str) -> Profile:
    """Load ``profiles/<name>.yaml`` shipped with NeuroFlow."""
    ref = Path(__file__).with_name("profiles") / f"{name}.yaml"
    if not ref.is_file():
        raise ManifestError(f"seccomp profile {name!r} does not exist (available: default)")
    return parse_profile(yaml.safe_load(ref.read_text()), str(ref))


def parse_profile(raw: Any, where: str) -> Profile:
    if not isinstance(raw, dict) or not isinstance(raw.get("deny"), list):
        raise ManifestError(f"{where}: expected a mapping with a 'deny' list")
    families = []
    for fam in raw.get("socket_families", []):
        value = getattr(socket, str(fam), None)
        if not isinstance(value, int):
            raise ManifestError(f"{where}: socket_families: unknown address family {fam!r}")
        families.append(value)
    return Profile(
        name=str(raw.get("name", "")),
        deny=tuple(str(s) for s in raw["deny"]),
        socket_families=tuple(families),
        deny_namespace_clone=bool(raw.get("deny_namespace_clone", True)),
    )


def _known(name: str) -> bool:
    try:
        return sc.resolve_syscall(sc.system_arch(), name) >= 0
    except (ValueError, OSError):
        return False


def build_filter(profile: Profile) -> sc.SyscallFilter:
    """Compile the profile. Syscalls this architecture lacks are skipped."""
    filt = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in profile.deny:
        if _known(name):
            filt.add_rule(eperm, name)
    if profile.socket_families:
        # One rule per call matches "family is none of the allowed ones".
        args = [sc.Arg(0, sc.NE, fam) for fam in profile.socket_families]
        filt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", *args)
    if profile.deny_namespace_clone:
        for flag in _NAMESPACE_FLAGS:
            filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        if _known("clone3"):
            filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    return filt
