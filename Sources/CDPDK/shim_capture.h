/*
 * CDPDK, capture: the C side of `switchyard ctl capture` (docs/operations.md, "Capture").
 *
 *   lcore (hot path)                                         control thread
 *   ────────────────                                         ──────────────
 *   edge armed? ─► filter (rte_bpf, JIT) ─► rte_pktmbuf_copy ─► MP/SC ring ─► pcapng file
 *                     rejected: counted     pool/ring full: copy freed, counted; the packet goes on
 *
 * rte_bpf and rte_pcapng are EXPERIMENTAL in DPDK 22.11. shim.h has included rte_compat.h long
 * before this file, so ALLOW_EXPERIMENTAL_API cannot be defined in time here; the experimental
 * functions are called only from the wrappers below (this is a [system] module, so their
 * deprecation warnings stay inside it) and Swift sees only the sy_ names.
 */
#ifndef SWITCHYARD_CDPDK_SHIM_CAPTURE_H
#define SWITCHYARD_CDPDK_SHIM_CAPTURE_H

#include <stdio.h>
#include <pcap/pcap.h>
#include <rte_bpf.h>
#include <rte_pcapng.h>

/* What the tap is attached to. */
enum {
    SY_CAPTURE_STAGE = 0, /* packets leaving a stage instance (one or every disposition) */
    SY_CAPTURE_RX = 1,    /* packets received from a port (every queue) */
    SY_CAPTURE_TX = 2,    /* packets handed to a port's tx (before rte_eth_tx_burst) */
};

/* The active capture, published by the control thread through one pointer that every graph
 * reads once per burst (NULL: no capture, the only cost). Immutable while published. */
typedef struct {
    uint8_t kind;             /* SY_CAPTURE_* */
    uint8_t any_disposition;  /* stage: 1 = every disposition */
    uint8_t disposition;      /* stage: the one disposition when any_disposition == 0 */
    uint8_t _pad;
    uint16_t stage;           /* stage: the stage key (CaptureService numbers stage names) */
    uint16_t port;            /* rx/tx: the DPDK port id */
    uint32_t snaplen;         /* bytes copied per packet at most */
    uint32_t _pad2;
    struct rte_bpf *filter;   /* NULL: every packet */
    uint64_t (*jit)(void *);  /* the filter's JIT-compiled code, or NULL (interpreted) */
    struct rte_mempool *pool; /* copies come from here, never from the data-plane pools */
    struct rte_ring *ring;    /* multi-producer (lcores), single-consumer (control thread) */
} sy_capture_tap;

/* Written into the private area of every copy (the capture pool has priv_size = its size). */
typedef struct {
    uint64_t tsc;         /* rte_rdtsc() when copied */
    uint32_t orig_len;    /* the packet's length before snaplen */
    uint16_t lcore;
    uint16_t stage;       /* stage key: the stage that gave the disposition (0xffff: none, rx) */
    uint16_t port;        /* the pcapng interface: rx/tx port, else the packet's input port */
    uint16_t queue;       /* rx/tx queue (0xffff: none) */
    uint8_t kind;         /* SY_CAPTURE_* */
    uint8_t disposition;  /* the disposition given by `stage` */
    uint16_t reason;      /* drops: index of the stage's own drop counter, 0xffff: unknown */
} sy_capture_meta;

#define SY_CAPTURE_NONE 0xffff

/* Counter slots of an lcore's "capture" block, in order. */
enum {
    SY_CAPTURE_SEEN = 0,         /* crossed the tapped edge while a capture ran */
    SY_CAPTURE_FILTERED = 1,     /* the filter rejected them */
    SY_CAPTURE_COPIED = 2,       /* copies put on the ring */
    SY_CAPTURE_COPY_DROPPED = 3, /* copies lost: capture pool empty or ring full (the packet went on) */
};

static inline struct rte_mempool *sy_capture_pool_create(const char *name, unsigned n, uint16_t data_room, int socket) {
    return rte_pktmbuf_pool_create(name, n, 0, (uint16_t)RTE_ALIGN(sizeof(sy_capture_meta), RTE_MBUF_PRIV_ALIGN),
                                   data_room, socket);
}
static inline void sy_mempool_free(struct rte_mempool *mp) { rte_mempool_free(mp); }
static inline sy_capture_meta *sy_capture_meta_of(struct rte_mbuf *m) { return (sy_capture_meta *)rte_mbuf_to_priv(m); }
static inline struct rte_mbuf *sy_mbuf_next(const struct rte_mbuf *m) { return m->next; }

/* Copies the packets of one burst that pass the filter onto the capture ring. Never blocks and
 * never touches `pkts` beyond reading them. `meta` is the template; tsc and length are filled in,
 * and for stage edges the interface is each packet's input port (rx/tx: meta.port, the port). */
static inline void sy_capture_burst(const sy_capture_tap *tap, struct rte_mbuf **pkts, uint32_t n,
                                    sy_capture_meta meta, uint64_t *counters) {
    uint64_t rc[256];
    struct rte_mbuf *copies[256];
    if (n > 256) n = 256;
    sy_counter_add(counters + SY_CAPTURE_SEEN, n);
    if (tap->filter != NULL) {
        if (tap->jit != NULL) {
            for (uint32_t i = 0; i < n; i++) rc[i] = tap->jit(pkts[i]);
        } else {
            rte_bpf_exec_burst(tap->filter, (void **)pkts, rc, n);
        }
    }
    uint32_t k = 0, filtered = 0, failed = 0;
    uint64_t now = rte_rdtsc();
    for (uint32_t i = 0; i < n; i++) {
        if (tap->filter != NULL && rc[i] == 0) { filtered++; continue; }
        struct rte_mbuf *c = rte_pktmbuf_copy(pkts[i], tap->pool, 0, tap->snaplen);
        if (c == NULL) { failed++; continue; }
        sy_capture_meta *cm = sy_capture_meta_of(c);
        *cm = meta;
        cm->tsc = now;
        cm->orig_len = pkts[i]->pkt_len;
        if (meta.kind == SY_CAPTURE_STAGE) cm->port = pkts[i]->port;
        copies[k++] = c;
    }
    uint32_t queued = k == 0 ? 0 : rte_ring_enqueue_burst(tap->ring, (void **)copies, k, NULL);
    if (queued < k) rte_pktmbuf_free_bulk(copies + queued, k - queued);
    if (filtered) sy_counter_add(counters + SY_CAPTURE_FILTERED, filtered);
    if (queued) sy_counter_add(counters + SY_CAPTURE_COPIED, queued);
    if (failed + (k - queued)) sy_counter_add(counters + SY_CAPTURE_COPY_DROPPED, failed + (k - queued));
}

/* ---------- the filter: libpcap's compiler, DPDK's converter and JIT ----------
 * Compiles `expression` as tcpdump does for Ethernet (DLT_EN10MB), converts the classic BPF to
 * eBPF (rte_bpf_convert), loads it (JIT-compiled where DPDK can). NULL on error, with a message
 * in `error`. */
static inline struct rte_bpf *sy_capture_filter_compile(const char *expression, uint32_t snaplen, char *error,
                                                        size_t error_size) {
    pcap_t *dead = pcap_open_dead(DLT_EN10MB, (int)snaplen);
    if (dead == NULL) {
        snprintf(error, error_size, "libpcap: cannot open a dead handle");
        return NULL;
    }
    struct bpf_program program;
    if (pcap_compile(dead, &program, expression, 1, PCAP_NETMASK_UNKNOWN) != 0) {
        snprintf(error, error_size, "%s", pcap_geterr(dead));
        pcap_close(dead);
        return NULL;
    }
    struct rte_bpf_prm *prm = rte_bpf_convert(&program);
    pcap_freecode(&program);
    pcap_close(dead);
    if (prm == NULL) {
        snprintf(error, error_size, "rte_bpf_convert: %s", rte_strerror(rte_errno));
        return NULL;
    }
    struct rte_bpf *bpf = rte_bpf_load(prm);
    int err = rte_errno;
    rte_free(prm);
    if (bpf == NULL) snprintf(error, error_size, "rte_bpf_load: %s", rte_strerror(err));
    return bpf;
}
/* The JIT-compiled function, or NULL when DPDK could not compile this program natively. */
static inline uint64_t (*sy_capture_filter_jit(const struct rte_bpf *bpf))(void *) {
    struct rte_bpf_jit jit = {0};
    if (rte_bpf_get_jit(bpf, &jit) != 0) return NULL;
    return jit.func;
}
static inline void sy_capture_filter_free(struct rte_bpf *bpf) { rte_bpf_destroy(bpf); }

/* ---------- the file ----------
 * rte_pcapng (22.11) writes the section header and one interface block per DPDK port, in
 * RTE_ETH_FOREACH_DEV order, with nanosecond timestamps. Its rte_pcapng_copy has no comment
 * option until 23.11, so the Enhanced Packet Blocks are written by Switchyard (CaptureFile.swift)
 * to the same descriptor; sy_capture_interface_index gives the interface id rte_pcapng used. */
static inline rte_pcapng_t *sy_pcapng_fdopen(int fd, const char *os, const char *hardware, const char *app,
                                             const char *comment) {
    return rte_pcapng_fdopen(fd, os, hardware, app, comment);
}
static inline void sy_pcapng_close(rte_pcapng_t *p) { rte_pcapng_close(p); }
static inline ssize_t sy_pcapng_write_stats(rte_pcapng_t *p, uint16_t port, const char *comment, uint64_t start_ns,
                                            uint64_t end_ns, uint64_t received, uint64_t dropped) {
    return rte_pcapng_write_stats(p, port, comment, start_ns, end_ns, received, dropped);
}
static inline int sy_capture_interface_index(uint16_t port) {
    int index = 0;
    uint16_t id;
    RTE_ETH_FOREACH_DEV(id) {
        if (id == port) return index;
        index++;
    }
    return -1;
}

#endif
