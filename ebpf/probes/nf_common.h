/* Shared by every NeuroFlow probe: the watched-cgroup filter and the health counters.
 *
 * Each probe module is compiled and loaded on its own (one failing probe never
 * takes the others down), so each has its own copy of these maps; the daemon
 * writes the same cgroup ids into all of them.
 *
 * No kernel struct is read anywhere: only tracepoint arguments and helpers,
 * so the programs compile against the minimal header folder (DESIGN.md, BCC).
 */
#ifndef NF_COMMON_H
#define NF_COMMON_H

#ifndef EEXIST
#define EEXIST 17 /* errno of a map insert whose key another CPU created first */
#endif

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

#ifndef NF_MAX_CGROUPS
#define NF_MAX_CGROUPS 4096
#endif

/* Slot indices of nf_stats (mirrored in ebpf/probes.py). */
#define NF_STAT_LOST 0     /* an event did not fit in the ring buffer */
#define NF_STAT_MAP_FULL 1 /* an aggregation map had no room for a new key */

/* cgroup v2 id (the inode of the worker's leaf) -> its agent index (ebpf/registry.py)
 * and, counted by the syscalls probe, the worker's syscalls: the lookup every
 * syscall makes anyway finds the counter, so a per-worker total costs one atomic
 * add. (A per-CPU map would save the atomic, but with one in the VM tier's
 * Debian 6.1 guest both CPUs locked up in the kernel; not understood, so not
 * used.) The supervisor reads it at the start and end of a request (the map's fd
 * is passed to it, see ebpf/share.py); the layout is mirrored in
 * neuroflow.supervisor.kernel_counts. */
struct nf_watch {
    u32 agent;
    u32 pad;
    u64 syscalls;
};

BPF_HASH(watched, u64, struct nf_watch, NF_MAX_CGROUPS);
BPF_ARRAY(nf_stats, u64, 2);

static __always_inline struct nf_watch *nf_current_watch(void) {
    u64 cg = bpf_get_current_cgroup_id();
    return watched.lookup(&cg);
}

static __always_inline u32 *nf_current_agent(void) {
    struct nf_watch *w = nf_current_watch();
    return w ? &w->agent : 0;
}

static __always_inline void nf_stat(int slot) {
    u64 *v = nf_stats.lookup(&slot);
    if (v)
        __sync_fetch_and_add(v, 1);
}

/* log2 bucket of a latency in nanoseconds: value in [2^slot, 2^(slot+1)). */
static __always_inline u32 nf_log2(u64 v) {
    u32 r = 0;
#pragma unroll
    for (int shift = 32; shift > 0; shift >>= 1) {
        if (v >> shift) {
            v >>= shift;
            r += shift;
        }
    }
    return r;
}

#endif
