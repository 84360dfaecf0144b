/*
 * CDPDK: the one layer through which Switchyard calls DPDK.
 *
 * DPDK structs with unions, bit-fields or alignment attributes (rte_mbuf, rte_eth_conf, ...)
 * import into Swift only as opaque pointers. Every field Swift needs is reached through a
 * `static inline` accessor here, so the Swift optimiser inlines it into the hot path: a call
 * to sy_mbuf_data_len() costs one load, not a function call.
 *
 * Naming: sy_<object>_<what>. Hot-path helpers never allocate and never block.
 */
#ifndef SWITCHYARD_CDPDK_SHIM_H
#define SWITCHYARD_CDPDK_SHIM_H

#include <rte_config.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ethdev.h>
#include <rte_dev.h>
#include <rte_bus.h>
#include <rte_rcu_qsbr.h>
#include <rte_malloc.h>
#include <rte_version.h>
#include <rte_telemetry.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_jhash.h>
#include <rte_ip.h>

/* ---------- EAL ---------- */

static inline int sy_errno(void) { return rte_errno; }
static inline const char *sy_strerror(int err) { return rte_strerror(err); }
static inline unsigned sy_lcore_id(void) { return rte_lcore_id(); }
static inline unsigned sy_max_lcore(void) { return RTE_MAX_LCORE; }
static inline const char *sy_version(void) { return rte_version(); }

/* Gives a non-EAL thread (a test's or the control plane's) an lcore id, which rte_hash's
 * multi-writer paths index per-lcore caches with. Idempotent; returns -1 when none is free. */
static inline int sy_thread_ensure_lcore(void) {
    if (rte_lcore_id() != LCORE_ID_ANY) return 0;
    return rte_thread_register();
}

/* Entry point type for rte_eal_remote_launch. */
typedef int (*sy_lcore_function_t)(void *);
static inline int sy_remote_launch(sy_lcore_function_t fn, void *arg, unsigned lcore) {
    return rte_eal_remote_launch(fn, arg, lcore);
}

/* ---------- relaxed single-writer counters ----------
 * Counters are written by exactly one lcore and read by anyone (stats printer, exporter).
 * Relaxed atomics compile to plain loads and stores on x86-64 and make the sharing well-defined. */
static inline void sy_counter_add(uint64_t *counter, uint64_t n) {
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
static inline uint64_t sy_counter_read(const uint64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}
static inline uint32_t sy_atomic_load_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void sy_atomic_store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void *sy_atomic_load_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void sy_atomic_store_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* ---------- time ---------- */

static inline uint64_t sy_rdtsc(void) { return rte_rdtsc(); }
static inline void sy_prefetch(const void *p) { rte_prefetch0(p); }
static inline uint64_t sy_tsc_hz(void) { return rte_get_tsc_hz(); }
static inline void sy_pause(void) { rte_pause(); }

/* ---------- mbufs ---------- */

/* ---------- packet metadata ----------
 * What classify learned about a packet, for the stages after it. It lives in the mbuf's private
 * area (every Switchyard pool reserves SY_META_SIZE bytes there), so it costs no allocation and
 * travels with the mbuf through rings. `classify` (input: wire) resets it for every packet.
 */
/* A flow as the client sent it: the key of the connection table (and of the flow hash). */
typedef struct sy_flow_key {
    uint8_t src[16];      /* client address (IPv4: first 4 bytes, rest zero) */
    uint8_t dst[16];      /* VIP address */
    uint16_t src_port;    /* network byte order; ICMP echo: the identifier */
    uint16_t dst_port;    /* network byte order */
    uint8_t protocol;
    uint8_t family;
    uint16_t zero;        /* always 0: keys are compared bytewise */
} sy_flow_key;
_Static_assert(sizeof(sy_flow_key) == 40, "flow keys are 40 bytes");

enum {
    SY_META_FROM_PEER = 1,   /* decapsulated from a peer host: never encapsulate again */
    SY_META_ICMP_ERROR = 2,  /* an ICMP/ICMPv6 error: the flow is the one quoted inside */
    SY_META_FRAGMENT = 4,    /* an IPv4/IPv6 fragment (only the first one has ports) */
    SY_META_VLAN = 8,        /* an 802.1Q tag follows the source MAC */
    SY_META_REPLY = 16,      /* from a backend (bypass tuple) to a client: translate back to the VIP */
    SY_META_EGRESS = 32,     /* to an egress address and port (cluster.egress): a reply of an outbound connection */
    SY_META_HANDED_ON = 64,  /* daisy chaining: handed on once by the previous table's choice; never again */
};
typedef struct sy_meta {
    uint16_t l3;          /* offset of the IP header from the start of the frame */
    uint16_t l4;          /* offset of the transport (or ICMP) header; 0 for non-first fragments */
    uint16_t inner_l3;    /* ICMP error: offset of the quoted IP header, else 0 */
    uint16_t inner_l4;    /* ICMP error: offset of the quoted transport header, else 0 */
    uint16_t l3_end;      /* offset just past the IP packet (Ethernet padding excluded) */
    uint8_t family;       /* 4 or 6; 0 when not IP */
    uint8_t protocol;     /* transport protocol of the flow (the quoted one for ICMP errors) */
    uint8_t flags;        /* SY_META_* */
    uint8_t tcp_flags;    /* flags of the TCP header (not of a quoted one), else 0 */
    uint16_t service;     /* index + 1 of the service (VIP, protocol, port); 0: none */
    uint16_t backend;     /* index + 1 of the backend (bypass tuple) when known; 0: not chosen yet */
    uint16_t peer;        /* host id: the owner to encapsulate to, or the tunnel's source host */
    uint32_t flow_hash;   /* CRC32-C of the client-side flow key (FlowKeys), 0 when not a VIP flow */
    uint16_t target_port; /* chosen bypass tuple (network order), valid when `has_target` */
    uint8_t has_target;   /* 1: target_* hold the bypass tuple (from the connection table or a pick) */
    uint8_t reserved;
    uint64_t target_high; /* bypass address words (IPAddress layout) */
    uint64_t target_low;
    sy_flow_key key;      /* the client-side flow (FlowKeys), filled with flow_hash */
} sy_meta;
#define SY_META_SIZE 128
_Static_assert(sizeof(sy_meta) <= SY_META_SIZE, "sy_meta must fit the mbuf private area");

static inline sy_meta *sy_mbuf_meta(struct rte_mbuf *m) { return (sy_meta *)rte_mbuf_to_priv(m); }
static inline sy_flow_key *sy_meta_key(sy_meta *m) { return &m->key; }
static inline uint16_t sy_mbuf_priv_size(const struct rte_mbuf *m) { return rte_pktmbuf_priv_size(m->pool); }

static inline struct rte_mempool *sy_pktmbuf_pool_create(const char *name, unsigned n, unsigned cache,
                                                         uint16_t data_room, int socket) {
    return rte_pktmbuf_pool_create(name, n, cache, SY_META_SIZE, data_room, socket);
}
static inline unsigned sy_mempool_avail(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }
static inline unsigned sy_mempool_in_use(const struct rte_mempool *mp) { return rte_mempool_in_use_count(mp); }
static inline unsigned sy_mempool_size(const struct rte_mempool *mp) { return mp->size; }
static inline const char *sy_mempool_name(const struct rte_mempool *mp) { return mp->name; }

static inline struct rte_mbuf *sy_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
static inline int sy_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}
static inline void sy_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
static inline void sy_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n) { rte_pktmbuf_free_bulk(mbufs, n); }

static inline uint8_t *sy_mbuf_data(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
static inline uint16_t sy_mbuf_data_len(const struct rte_mbuf *m) { return m->data_len; }
static inline uint32_t sy_mbuf_pkt_len(const struct rte_mbuf *m) { return m->pkt_len; }
static inline uint16_t sy_mbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
static inline uint16_t sy_mbuf_port(const struct rte_mbuf *m) { return m->port; }
static inline void sy_mbuf_set_port(struct rte_mbuf *m, uint16_t port) { m->port = port; }
static inline uint32_t sy_mbuf_rss_hash(const struct rte_mbuf *m) { return m->hash.rss; }
static inline void sy_mbuf_set_rss_hash(struct rte_mbuf *m, uint32_t h) { m->hash.rss = h; }
static inline uint64_t sy_mbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }
static inline uint16_t sy_mbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
static inline uint16_t sy_mbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
static inline struct rte_mempool *sy_mbuf_pool(const struct rte_mbuf *m) { return m->pool; }
/* Grow or shrink the packet at either end; NULL / -1 when there is no room. */
static inline uint8_t *sy_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) {
    return (uint8_t *)rte_pktmbuf_prepend(m, len);
}
static inline uint8_t *sy_pktmbuf_append(struct rte_mbuf *m, uint16_t len) {
    return (uint8_t *)rte_pktmbuf_append(m, len);
}
static inline uint8_t *sy_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return (uint8_t *)rte_pktmbuf_adj(m, len); }
static inline int sy_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
/* Copy `len` bytes from `offset` out of a (possibly segmented) mbuf; -1 when out of range. */
static inline int sy_pktmbuf_read(const struct rte_mbuf *m, uint32_t offset, uint32_t len, void *out) {
    const void *p = rte_pktmbuf_read(m, offset, len, out);
    if (p == NULL) return -1;
    if (p != out) memcpy(out, p, len);
    return 0;
}

/* ---------- rings ---------- */

static inline struct rte_ring *sy_ring_create(const char *name, unsigned count, int socket, bool single_producer,
                                              bool single_consumer) {
    unsigned flags = (single_producer ? RING_F_SP_ENQ : 0) | (single_consumer ? RING_F_SC_DEQ : 0);
    return rte_ring_create(name, count, socket, flags);
}
static inline unsigned sy_ring_enqueue_burst(struct rte_ring *r, struct rte_mbuf **mbufs, unsigned n) {
    return rte_ring_enqueue_burst(r, (void *const *)mbufs, n, NULL);
}
static inline unsigned sy_ring_dequeue_burst(struct rte_ring *r, struct rte_mbuf **mbufs, unsigned n) {
    return rte_ring_dequeue_burst(r, (void **)mbufs, n, NULL);
}
static inline unsigned sy_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
static inline unsigned sy_ring_capacity(const struct rte_ring *r) { return rte_ring_get_capacity(r); }

/* ---------- ports ---------- */

static inline uint16_t sy_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **mbufs, uint16_t n) {
    return rte_eth_rx_burst(port, queue, mbufs, n);
}
static inline uint16_t sy_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **mbufs, uint16_t n) {
    return rte_eth_tx_burst(port, queue, mbufs, n);
}

/* What Switchyard needs to know about a port before configuring it. */
struct sy_port_info {
    char driver_name[64];
    uint16_t max_rx_queues;
    uint16_t max_tx_queues;
    uint16_t rx_desc_min, rx_desc_max, tx_desc_min, tx_desc_max;
    uint64_t flow_type_rss_offloads;
    uint32_t max_rx_pktlen;
    int socket_id;
    uint8_t mac[6];
    uint16_t min_mtu, max_mtu;
    bool rx_scatter;     /* RTE_ETH_RX_OFFLOAD_SCATTER: receives frames larger than one mbuf */
    bool tx_multi_segs;  /* RTE_ETH_TX_OFFLOAD_MULTI_SEGS: sends chained mbufs */
};

static inline int sy_port_info(uint16_t port, struct sy_port_info *out) {
    struct rte_eth_dev_info info;
    memset(out, 0, sizeof(*out));
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc != 0) return rc;
    if (info.driver_name) strncpy(out->driver_name, info.driver_name, sizeof(out->driver_name) - 1);
    out->max_rx_queues = info.max_rx_queues;
    out->max_tx_queues = info.max_tx_queues;
    out->rx_desc_min = info.rx_desc_lim.nb_min;
    out->rx_desc_max = info.rx_desc_lim.nb_max;
    out->tx_desc_min = info.tx_desc_lim.nb_min;
    out->tx_desc_max = info.tx_desc_lim.nb_max;
    out->flow_type_rss_offloads = info.flow_type_rss_offloads;
    out->max_rx_pktlen = info.max_rx_pktlen;
    out->min_mtu = info.min_mtu;
    out->max_mtu = info.max_mtu;
    out->rx_scatter = (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_SCATTER) != 0;
    out->tx_multi_segs = (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) != 0;
    out->socket_id = rte_eth_dev_socket_id(port);
    struct rte_ether_addr mac;
    if (rte_eth_macaddr_get(port, &mac) == 0) memcpy(out->mac, mac.addr_bytes, 6);
    return 0;
}

/* Configure queues; RSS over IP/TCP/UDP when asked and the device supports it
 * (*rss_applied tells which); the MTU (0: the device's default) and scattered receive; multi-segment
 * transmit whenever the device offers it. Returns a negative errno on failure. */
static inline int sy_port_configure(uint16_t port, uint16_t rxq, uint16_t txq, bool rss, bool *rss_applied,
                                    uint16_t mtu, bool scatter) {
    struct rte_eth_dev_info info;
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc != 0) return rc;
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    *rss_applied = false;
    if (rss && rxq > 1 && hf != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = NULL; /* the PMD's default key */
        conf.rx_adv_conf.rss_conf.rss_hf = hf;
        *rss_applied = true;
    }
    conf.rxmode.mtu = mtu;
    if (scatter) conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_SCATTER;
    conf.txmode.offloads |= info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
    return rte_eth_dev_configure(port, rxq, txq, &conf);
}
/* The MTU after configure, before start. -ENOTSUP: the driver has no MTU operation and keeps the
 * MTU rte_eth_dev_configure recorded. */
static inline int sy_port_set_mtu(uint16_t port, uint16_t mtu) { return rte_eth_dev_set_mtu(port, mtu); }
static inline int sy_port_get_mtu(uint16_t port, uint16_t *mtu) { return rte_eth_dev_get_mtu(port, mtu); }
static inline int sy_port_rx_queue_setup(uint16_t port, uint16_t q, uint16_t desc, int socket,
                                         struct rte_mempool *mp) {
    return rte_eth_rx_queue_setup(port, q, desc, (unsigned)socket, NULL, mp);
}
static inline int sy_port_tx_queue_setup(uint16_t port, uint16_t q, uint16_t desc, int socket) {
    return rte_eth_tx_queue_setup(port, q, desc, (unsigned)socket, NULL);
}
static inline int sy_port_adjust_desc(uint16_t port, uint16_t *rxd, uint16_t *txd) {
    return rte_eth_dev_adjust_nb_rx_tx_desc(port, rxd, txd);
}

struct sy_port_stats {
    uint64_t ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf;
};
static inline int sy_port_stats(uint16_t port, struct sy_port_stats *out) {
    struct rte_eth_stats s;
    int rc = rte_eth_stats_get(port, &s);
    if (rc != 0) return rc;
    out->ipackets = s.ipackets; out->opackets = s.opackets;
    out->ibytes = s.ibytes; out->obytes = s.obytes;
    out->imissed = s.imissed; out->ierrors = s.ierrors; out->oerrors = s.oerrors;
    out->rx_nombuf = s.rx_nombuf;
    return 0;
}

/* Link state without waiting (rte_eth_link has bit-fields Swift cannot read). */
static inline int sy_port_link(uint16_t port, uint32_t *speed_mbps, bool *up, bool *full_duplex) {
    struct rte_eth_link link;
    memset(&link, 0, sizeof(link));
    int rc = rte_eth_link_get_nowait(port, &link);
    if (rc != 0) return rc;
    *speed_mbps = link.link_speed;
    *up = link.link_status == RTE_ETH_LINK_UP;
    *full_duplex = link.link_duplex == RTE_ETH_LINK_FULL_DUPLEX;
    return 0;
}

/* ---------- DPDK memory (hugepages when the EAL has them) for large data-plane tables ---------- */

/* Zeroed, cache-line aligned, on `socket` (SOCKET_ID_ANY: anywhere). NULL when the EAL's memory is
 * exhausted. Tables read at random on every packet belong here, not in malloc's 4 KB pages: with a
 * million flows nearly every access to a 4 KB-page table is also a TLB miss. */
static inline void *sy_zmalloc_socket(const char *name, size_t size, int socket) {
    return rte_zmalloc_socket(name, size, RTE_CACHE_LINE_SIZE, socket);
}
static inline void sy_free(void *memory) { rte_free(memory); }

/* ---------- RCU (quiescent-state based reclamation) ---------- */

static inline struct rte_rcu_qsbr *sy_qsbr_create(uint32_t max_threads) {
    size_t sz = rte_rcu_qsbr_get_memsize(max_threads);
    struct rte_rcu_qsbr *v = (struct rte_rcu_qsbr *)rte_zmalloc("switchyard_qsbr", sz, RTE_CACHE_LINE_SIZE);
    if (v == NULL) return NULL;
    if (rte_rcu_qsbr_init(v, max_threads) != 0) { rte_free(v); return NULL; }
    return v;
}
static inline void sy_qsbr_free(struct rte_rcu_qsbr *v) { rte_free(v); }
static inline int sy_qsbr_register(struct rte_rcu_qsbr *v, unsigned id) {
    int rc = rte_rcu_qsbr_thread_register(v, id);
    if (rc == 0) rte_rcu_qsbr_thread_online(v, id);
    return rc;
}
static inline void sy_qsbr_unregister(struct rte_rcu_qsbr *v, unsigned id) {
    rte_rcu_qsbr_thread_offline(v, id);
    rte_rcu_qsbr_thread_unregister(v, id);
}
static inline void sy_qsbr_quiescent(struct rte_rcu_qsbr *v, unsigned id) { rte_rcu_qsbr_quiescent(v, id); }
/* Block (the control thread, never an lcore) until every registered reader has passed a quiescent state. */
static inline void sy_qsbr_synchronize(struct rte_rcu_qsbr *v) {
    /* The caller may itself be a reader (the control thread polls gossip as one): it reports its
     * own quiescent state first instead of waiting for itself. For an unregistered thread that
     * report only writes an unused counter slot. */
    unsigned self = rte_lcore_id();
    rte_rcu_qsbr_synchronize(v, self < RTE_MAX_LCORE ? self : RTE_QSBR_THRID_INVALID);
}

/* ---------- hashing and checksums ---------- */

/* CRC32-C: the flow hash and the hash of every lookup table. The same values as rte_hash_crc,
 * but always with the SSE4.2 instruction: rte_hash_crc.h picks its algorithm in a constructor
 * that a Swift import of the header never runs, so through it every hash took the software path. */
#if defined(__x86_64__) && defined(__SSE4_2__)
static inline uint32_t sy_hash_crc_8byte(uint64_t data, uint32_t seed) { return (uint32_t)__builtin_ia32_crc32di(seed, data); }
static inline uint32_t sy_hash_crc_4byte(uint32_t data, uint32_t seed) { return __builtin_ia32_crc32si(seed, data); }
static inline uint32_t sy_hash_crc(const void *data, uint32_t len, uint32_t seed) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t crc = seed;
    for (; len >= 8; len -= 8, p += 8) { uint64_t v; memcpy(&v, p, 8); crc = (uint32_t)__builtin_ia32_crc32di(crc, v); }
    if (len >= 4) { uint32_t v; memcpy(&v, p, 4); crc = __builtin_ia32_crc32si(crc, v); len -= 4; p += 4; }
    if (len >= 2) { uint16_t v; memcpy(&v, p, 2); crc = __builtin_ia32_crc32hi(crc, v); len -= 2; p += 2; }
    if (len >= 1) crc = __builtin_ia32_crc32qi(crc, *p);
    return crc;
}
#else
static inline uint32_t sy_hash_crc(const void *data, uint32_t len, uint32_t seed) { return rte_hash_crc(data, len, seed); }
static inline uint32_t sy_hash_crc_4byte(uint32_t data, uint32_t seed) { return rte_hash_crc_4byte(data, seed); }
static inline uint32_t sy_hash_crc_8byte(uint64_t data, uint32_t seed) { return rte_hash_crc_8byte(data, seed); }
#endif
/* Internet checksum of an IPv4 header (the checksum field must read zero). */
static inline uint16_t sy_ipv4_header_checksum(const void *header) { return rte_ipv4_cksum((const struct rte_ipv4_hdr *)header); }
/* Raw one's-complement sum over `len` bytes, not folded or inverted. */
static inline uint32_t sy_raw_checksum(const void *data, size_t len) { return __rte_raw_cksum(data, len, 0); }

/* ---------- connection table: rte_hash with lock-free readers ----------
 * Keys are 40-byte flow keys; lookups are lock-free (RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF),
 * adds and deletes may come from several lcores (MULTI_WRITER_ADD). A deleted key's slot is
 * reused only after every reader registered on `qsbr` has passed a quiescent state. */

/* Flow keys compared as five 8-byte words, straight-line, no memcmp: rte_hash has vectorised compares for keys of
 * 16, 32, 48 and 64 bytes only, and calls memcmp for the 40 bytes of a flow key. Returns 0 when
 * equal, as memcmp would. Registered with rte_hash_set_cmp_func (single-process only: the table
 * holds a pointer into this process). */
static int sy_flow_key_compare(const void *a, const void *b, size_t length) {
    (void)length; /* always sizeof(sy_flow_key) */
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    uint64_t x0, x1, x2, x3, x4, y0, y1, y2, y3, y4;
    memcpy(&x0, x, 8); memcpy(&x1, x + 8, 8); memcpy(&x2, x + 16, 8); memcpy(&x3, x + 24, 8); memcpy(&x4, x + 32, 8);
    memcpy(&y0, y, 8); memcpy(&y1, y + 8, 8); memcpy(&y2, y + 16, 8); memcpy(&y3, y + 24, 8); memcpy(&y4, y + 32, 8);
    return ((x0 ^ y0) | (x1 ^ y1) | (x2 ^ y2) | (x3 ^ y3) | (x4 ^ y4)) != 0;
}
_Static_assert(sizeof(sy_flow_key) == 40, "sy_flow_key_compare compares 40 bytes");

static inline struct rte_hash *sy_flow_table_create(const char *name, uint32_t entries, int socket) {
    struct rte_hash_parameters p;
    memset(&p, 0, sizeof(p));
    p.name = name;
    p.entries = entries;
    p.key_len = sizeof(sy_flow_key);
    p.hash_func = sy_hash_crc; /* the same function the stages hash flows with */
    p.hash_func_init_val = 0;
    p.socket_id = socket;
    p.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF | RTE_HASH_EXTRA_FLAGS_MULTI_WRITER_ADD;
    struct rte_hash *h = rte_hash_create(&p);
    if (h != NULL) rte_hash_set_cmp_func(h, sy_flow_key_compare);
    return h;
}
/* Frees deleted slots only after a grace period on `qsbr` (deferred queue, reclaimed as adds need room). */
static inline int sy_flow_table_attach_rcu(struct rte_hash *h, struct rte_rcu_qsbr *qsbr) {
    struct rte_hash_rcu_config c;
    memset(&c, 0, sizeof(c));
    c.v = qsbr;
    c.mode = RTE_HASH_QSBR_MODE_DQ;
    return rte_hash_rcu_qsbr_add(h, &c);
}
static inline void sy_flow_table_free(struct rte_hash *h) { rte_hash_free(h); }
static inline uint32_t sy_flow_hash(const struct rte_hash *h, const sy_flow_key *k) { return rte_hash_hash(h, k); }
/* Positions of `n` keys (-ENOENT when absent), with precomputed hashes. Any `n` (a burst may hold up
 * to 256 packets): rte_hash looks up at most RTE_HASH_LOOKUP_BULK_MAX (64) keys per call, into
 * arrays on its stack, and checks that bound only in debug builds. */
static inline void sy_flow_table_lookup_bulk(const struct rte_hash *h, const sy_flow_key **keys, uint32_t *hashes,
                                             uint32_t n, int32_t *positions) {
    for (uint32_t done = 0; done < n; done += RTE_HASH_LOOKUP_BULK_MAX) {
        uint32_t chunk = n - done < RTE_HASH_LOOKUP_BULK_MAX ? n - done : RTE_HASH_LOOKUP_BULK_MAX;
        rte_hash_lookup_with_hash_bulk(h, (const void **)(keys + done), hashes + done, chunk, positions + done);
    }
}
static inline int32_t sy_flow_table_lookup(const struct rte_hash *h, const sy_flow_key *k, uint32_t hash) {
    return rte_hash_lookup_with_hash(h, k, hash);
}
/* Adds a key; returns its position (>= 0), -ENOSPC when full. */
static inline int32_t sy_flow_table_add(const struct rte_hash *h, const sy_flow_key *k, uint32_t hash) {
    return rte_hash_add_key_with_hash(h, k, hash);
}
static inline int32_t sy_flow_table_delete(const struct rte_hash *h, const sy_flow_key *k, uint32_t hash) {
    return rte_hash_del_key_with_hash(h, k, hash);
}
/* Without RCU (single-threaded tests): return a deleted key's slot at once. */
static inline int sy_flow_table_free_position(const struct rte_hash *h, int32_t position) {
    return rte_hash_free_key_with_position(h, position);
}
static inline int32_t sy_flow_table_count(const struct rte_hash *h) { return rte_hash_count(h); }
static inline int32_t sy_flow_table_max_position(const struct rte_hash *h) { return (int32_t)rte_hash_max_key_id(h); }
static inline int sy_flow_table_key_at(const struct rte_hash *h, int32_t position, sy_flow_key *out) {
    void *key = NULL;
    int rc = rte_hash_get_key_with_position(h, position, &key);
    if (rc == 0) memcpy(out, key, sizeof(*out));
    return rc;
}

/* An "opened" or "closed" event for the control thread (48 bytes, an element of the events ring). */
enum { SY_FLOW_OPENED = 1, SY_FLOW_CLOSED = 2 };
typedef struct sy_flow_event {
    uint8_t kind;         /* SY_FLOW_OPENED or SY_FLOW_CLOSED */
    uint8_t reason;       /* closed: 1 FIN, 2 RST, 3 idle timeout, 4 evicted by the control plane */
    uint16_t owner;       /* host id of the owner */
    uint16_t backend_port;/* network order */
    uint16_t zero;
    sy_flow_key key;
} sy_flow_event;
_Static_assert(sizeof(sy_flow_event) == 48, "events are 48 bytes");

/* ---------- element rings (events to the control thread) ---------- */

static inline struct rte_ring *sy_elem_ring_create(const char *name, unsigned esize, unsigned count, int socket) {
    return rte_ring_create_elem(name, esize, count, socket, RING_F_SC_DEQ); /* many producers, one consumer */
}
static inline unsigned sy_elem_ring_enqueue_burst(struct rte_ring *r, const void *objs, unsigned esize, unsigned n) {
    return rte_ring_enqueue_burst_elem(r, objs, esize, n, NULL);
}
static inline unsigned sy_elem_ring_dequeue_burst(struct rte_ring *r, void *objs, unsigned esize, unsigned n) {
    return rte_ring_dequeue_burst_elem(r, objs, esize, n, NULL);
}
static inline void sy_ring_free(struct rte_ring *r) { rte_ring_free(r); }

/* ---------- atomics for shared tables ---------- */

static inline uint64_t sy_atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void sy_atomic_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t sy_relaxed_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void sy_relaxed_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline bool sy_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}
static inline uint64_t sy_fetch_add_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline uint64_t sy_fetch_sub_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
static inline bool sy_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
static inline uint32_t sy_fetch_add_u32(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

/* ---------- rewriting a packet in place (forward: neighbour requests; encapsulate: ICMP errors) ----------
 * sy_pktmbuf_set_length: makes `m` exactly `len` bytes long, all in its first segment: frees the
 * segments after the first, grows or shrinks the first one, and clears the transmit offload
 * requests (the bytes must then be written: the frame becomes another packet). Returns false,
 * changing nothing, when the first segment's buffer cannot hold `len` bytes.
 * sy_pktmbuf_raw_checksum: one's-complement sum of `len` bytes from `off` over every segment,
 * folded to 16 bits, not inverted (memory-order words, like rte_raw_cksum); false when the range
 * runs past the packet. */
static inline bool sy_pktmbuf_set_length(struct rte_mbuf *m, uint16_t len) {
    if ((uint32_t)m->data_off + len > m->buf_len) return false;
    if (m->next != NULL) {
        rte_pktmbuf_free(m->next);
        m->next = NULL;
        m->nb_segs = 1;
    }
    m->data_len = len;
    m->pkt_len = len;
    m->ol_flags &= ~RTE_MBUF_F_TX_OFFLOAD_MASK;
    return true;
}
static inline bool sy_pktmbuf_raw_checksum(const struct rte_mbuf *m, uint32_t off, uint32_t len, uint16_t *sum) {
    /* Not rte_raw_cksum_mbuf: in DPDK 22.11 it truncates a segment's unreduced sum to 16 bits
     * before byte-swapping it (segments that start at an odd offset), losing carries. */
    if ((uint64_t)off + len > m->pkt_len) return false;
    const struct rte_mbuf *seg = m;
    while (seg != NULL && off >= seg->data_len) {
        off -= seg->data_len;
        seg = seg->next;
    }
    uint64_t total = 0;
    uint32_t done = 0;
    while (done < len && seg != NULL) {
        uint32_t n = seg->data_len - off;
        if (n > len - done) n = len - done;
        uint32_t part = __rte_raw_cksum_reduce(__rte_raw_cksum(rte_pktmbuf_mtod_offset(seg, const char *, off), n, 0));
        if (done & 1) part = rte_bswap16((uint16_t)part); /* this segment's bytes sit in the other lane */
        total += part;
        done += n;
        off = 0;
        seg = seg->next;
    }
    while (total >> 16) total = (total & 0xffff) + (total >> 16);
    *sum = (uint16_t)total;
    return done == len;
}

#include "shim_capture.h"

#endif
