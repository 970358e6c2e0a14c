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

/* cgroup v2 id (the inode of the worker's leaf) -> agent index (ebpf/registry.py). */
BPF_HASH(watched, u64, u32, NF_MAX_CGROUPS);
BPF_ARRAY(nf_stats, u64, 2);

static __always_inline u32 *nf_current_agent(void) {
    u64 cg = bpf_get_current_cgroup_id();
    return watched.lookup(&cg);
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
