/* TCP connect latency (sock:inet_sock_set_state SYN_SENT -> ESTABLISHED) and
 * smoothed RTT (tcp:tcp_probe) by agent and destination.
 *
 * SYN_SENT is entered inside connect(), in the agent's own task, so the cgroup
 * filter works there; the sockets found that way are remembered by address
 * (skaddr). ESTABLISHED runs in softirq context, where "current" is any task,
 * so it is matched by skaddr only. Recent kernels' tcp_probe gives skaddr
 * too, but older ones (Debian 12's 6.1) do not, so an established socket is
 * also remembered by its connection tuple, which every tcp_probe gives.
 * (Two network namespaces can hold the same tuple at once; RTT samples of such
 * a pair would be counted for whichever registered it last.)
 */
#include "nf_common.h"

#define NF_TCP_ESTABLISHED 1
#define NF_TCP_SYN_SENT 2
#define NF_TCP_CLOSE 7

struct nf_dest {
    u32 agent;
    u16 family;
    u16 dport; /* host byte order, as the tracepoint gives it */
    u8 daddr[16];
};

/* A connection as tcp_probe names it: local port, remote port and address. */
struct nf_tuple {
    u16 family;
    u16 sport;
    u16 dport;
    u16 pad;
    u8 daddr[16];
};

struct nf_conn {
    u64 ts;
    struct nf_dest dest;
    struct nf_tuple tuple; /* set once established */
};

struct nf_tcp_hist_key {
    struct nf_dest dest;
    u32 slot;
    u32 kind; /* 0: connect latency (ns), 1: srtt (us), 2: failed connects (slot 0) */
};

BPF_HASH(tcp_socks, u64, struct nf_conn, NF_MAX_SOCKS);
BPF_HASH(tcp_tuples, struct nf_tuple, struct nf_dest, NF_MAX_SOCKS);
BPF_HASH(tcp_hist, struct nf_tcp_hist_key, u64, NF_MAX_TCP_KEYS);
BPF_HASH(tcp_sum, struct nf_tcp_hist_key, u64, NF_MAX_TCP_KEYS); /* slot = 0 */

static __always_inline void nf_tcp_add(struct nf_tcp_hist_key *key, u64 value) {
    u64 *v = tcp_hist.lookup(key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    } else {
        u64 one = 1;
        int err = tcp_hist.insert(key, &one);
        if (err == -EEXIST) {
            v = tcp_hist.lookup(key);
            if (v)
                __sync_fetch_and_add(v, 1);
        } else if (err) {
            nf_stat(NF_STAT_MAP_FULL);
        }
    }
    struct nf_tcp_hist_key skey = *key;
    skey.slot = 0;
    u64 *sum = tcp_sum.lookup(&skey);
    if (sum) {
        __sync_fetch_and_add(sum, value);
    } else {
        int err = tcp_sum.insert(&skey, &value);
        if (err == -EEXIST) {
            sum = tcp_sum.lookup(&skey);
            if (sum)
                __sync_fetch_and_add(sum, value);
        } else if (err) {
            nf_stat(NF_STAT_MAP_FULL);
        }
    }
}

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == NF_TCP_SYN_SENT) {
        u32 *agent = nf_current_agent();
        if (!agent)
            return 0;
        struct nf_conn conn = {.ts = bpf_ktime_get_ns()};
        conn.dest.agent = *agent;
        conn.dest.family = args->family;
        conn.dest.dport = args->dport;
        if (args->family == AF_INET)
            __builtin_memcpy(conn.dest.daddr, args->daddr, 4);
        else
            __builtin_memcpy(conn.dest.daddr, args->daddr_v6, 16);
        if (tcp_socks.update(&sk, &conn))
            nf_stat(NF_STAT_MAP_FULL);
        return 0;
    }
    struct nf_conn *conn = tcp_socks.lookup(&sk);
    if (!conn)
        return 0;
    if (args->oldstate == NF_TCP_SYN_SENT) {
        struct nf_tcp_hist_key key = {.dest = conn->dest};
        if (args->newstate == NF_TCP_ESTABLISHED) {
            u64 delta = bpf_ktime_get_ns() - conn->ts;
            key.slot = nf_log2(delta);
            key.kind = 0;
            nf_tcp_add(&key, delta);
            /* The local port is bound by now (it is not yet at SYN_SENT). */
            conn->tuple.family = args->family;
            conn->tuple.sport = args->sport;
            conn->tuple.dport = args->dport;
            if (args->family == AF_INET)
                __builtin_memcpy(conn->tuple.daddr, args->daddr, 4);
            else
                __builtin_memcpy(conn->tuple.daddr, args->daddr_v6, 16);
            if (tcp_tuples.update(&conn->tuple, &conn->dest))
                nf_stat(NF_STAT_MAP_FULL);
        } else {
            key.kind = 2;
            nf_tcp_add(&key, 0);
        }
    }
    if (args->newstate == NF_TCP_CLOSE) {
        if (conn->tuple.sport)
            tcp_tuples.delete(&conn->tuple);
        tcp_socks.delete(&sk);
    }
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_probe) {
    /* saddr/daddr hold a struct sockaddr_in or sockaddr_in6 (ports and
     * addresses in network order; the sport/dport fields are host order). */
    struct nf_tuple tuple = {.family = args->family, .sport = args->sport, .dport = args->dport};
    if (args->family == AF_INET)
        __builtin_memcpy(tuple.daddr, (u8 *)args->daddr + 4, 4);   /* sin_addr */
    else if (args->family == AF_INET6)
        __builtin_memcpy(tuple.daddr, (u8 *)args->daddr + 8, 16);  /* sin6_addr */
    else
        return 0;
    struct nf_dest *dest = tcp_tuples.lookup(&tuple);
    if (!dest)
        return 0;
    struct nf_tcp_hist_key key = {.dest = *dest, .kind = 1};
    u64 srtt = args->srtt;
    key.slot = nf_log2(srtt);
    nf_tcp_add(&key, srtt);
    return 0;
}
