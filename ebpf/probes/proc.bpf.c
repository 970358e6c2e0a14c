/* Process lifecycle inside the sandboxes: forks, execs and exits per agent
 * (aggregated in the kernel), plus one ring-buffer event per exec with the
 * file name (rare in a sandbox, and worth a log line). A full ring buffer
 * counts as a lost event.
 */
#include "nf_common.h"

#define NF_PROC_FORK 0
#define NF_PROC_EXEC 1
#define NF_PROC_EXIT 2

struct nf_proc_key {
    u32 agent;
    u32 kind;
};

struct nf_exec_event {
    u32 agent;
    u32 pid;
    char filename[128];
};

BPF_HASH(proc_counts, struct nf_proc_key, u64, NF_MAX_PROC_KEYS);
BPF_RINGBUF_OUTPUT(exec_events, 16); /* pages */

static __always_inline void nf_proc_count(u32 kind) {
    u32 *agent = nf_current_agent();
    if (!agent)
        return;
    struct nf_proc_key key = {.agent = *agent, .kind = kind};
    u64 *v = proc_counts.lookup(&key);
    if (v) {
        __sync_fetch_and_add(v, 1);
        return;
    }
    u64 one = 1;
    int err = proc_counts.insert(&key, &one);
    if (err == -EEXIST) {
        v = proc_counts.lookup(&key);
        if (v)
            __sync_fetch_and_add(v, 1);
    } else if (err) {
        nf_stat(NF_STAT_MAP_FULL);
    }
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    nf_proc_count(NF_PROC_FORK); /* any clone, threads too; current is the parent */
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
#ifdef NF_HAVE_GROUP_DEAD
    if (args->group_dead) /* the last thread: the process is gone */
        nf_proc_count(NF_PROC_EXIT);
#else
    /* Older kernels (Debian 12's 6.1) have no group_dead: count the exit of
     * the thread-group leader, which happens once per process too. */
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id == (u32)(id >> 32))
        nf_proc_count(NF_PROC_EXIT);
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 *agent = nf_current_agent();
    if (!agent)
        return 0;
    nf_proc_count(NF_PROC_EXEC);
    struct nf_exec_event *ev = exec_events.ringbuf_reserve(sizeof(struct nf_exec_event));
    if (!ev) {
        nf_stat(NF_STAT_LOST);
        return 0;
    }
    ev->agent = *agent;
    ev->pid = args->pid;
    TP_DATA_LOC_READ_STR(ev->filename, filename, sizeof(ev->filename));
    exec_events.ringbuf_submit(ev, 0);
    return 0;
}
