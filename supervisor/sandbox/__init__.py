"""Worker isolation, one module per mechanism, applied in one fixed order.

The supervisor (root, outside) prepares: it creates the cgroups and an empty
directory for the sandbox's root. The launcher (``neuroflow.supervisor.zygote``,
still root) joins the zygote's cgroup, compiles the seccomp filter and leaves
the host's namespaces; its child, pid 1 of the new pid namespace, then runs
:func:`contain`, which owns the order:

1. mounts      — minimal read-only root, ``pivot_root``, old root detached
2. namespaces  — hostname, ``lo`` up (needs CAP_NET_ADMIN and CAP_SYS_ADMIN)
3. rlimits     — core dumps off, open files, file size
4. caps        — bounding set emptied, uid/gid switched, no_new_privs, pdeathsig
5. seccomp     — last, so that nothing above needs a syscall it denies

Only after all five does the zygote import any of the agent's code.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import caps, mounts, namespaces, rlimits, seccomp


@dataclass(frozen=True)
class SandboxSpec:
    """Everything the launcher needs; crosses the process boundary as JSON."""

    agent: str
    release: str
    release_dir: str
    entry: str
    uid: int
    gid: int
    root_dir: str
    runtime_paths: tuple[str, ...]
    seccomp_profile: str
    zygote_procs: tuple[str, ...]
    supervisor_pid: int
    tmp_size: int = 64 * 1024 * 1024
    #: RLIMIT_AS, a backstop behind the cgroup's memory limit; 0 for none.
    address_space: int = 0
    #: Host folder holding the egress proxy's socket, shown at /run/neuroflow; "" for none.
    egress_dir: str = ""


def contain(spec: SandboxSpec, filt: seccomp.sc.SyscallFilter) -> None:
    """Apply every isolation step, in order, to the calling process (pid 1 inside)."""
    mounts.build_and_enter(
        mounts.RootSpec(
            root=spec.root_dir,
            app=spec.release_dir,
            runtime_paths=spec.runtime_paths,
            uid=spec.uid,
            gid=spec.gid,
            hostname=spec.agent,
            tmp_size=spec.tmp_size,
            egress_dir=spec.egress_dir,
        )
    )
    namespaces.init_inside(spec.agent)
    rlimits.apply_base(spec.address_space)
    caps.drop_privileges(spec.uid, spec.gid)
    filt.load()
