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

/* ---------- EAL ---------- */

static inline int sy_errno(void) { return rte_errno; }
static inline const char *sy_strerror(int err) { return rte_strerror(err); }
static inline unsigned sy_lcore_id(void) { return rte_lcore_id(); }
static inline unsigned sy_max_lcore(void) { return RTE_MAX_LCORE; }
static inline const char *sy_version(void) { return rte_version(); }

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
static inline uint64_t sy_tsc_hz(void) { return rte_get_tsc_hz(); }
static inline void sy_pause(void) { rte_pause(); }

/* ---------- mbufs ---------- */

static inline struct rte_mempool *sy_pktmbuf_pool_create(const char *name, unsigned n, unsigned cache,
                                                         uint16_t data_room, int socket) {
    return rte_pktmbuf_pool_create(name, n, cache, 0, data_room, socket);
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
    out->socket_id = rte_eth_dev_socket_id(port);
    struct rte_ether_addr mac;
    if (rte_eth_macaddr_get(port, &mac) == 0) memcpy(out->mac, mac.addr_bytes, 6);
    return 0;
}

/* Configure queues; RSS over IP/TCP/UDP when asked and the device supports it
 * (*rss_applied tells which). Returns a negative errno on failure. */
static inline int sy_port_configure(uint16_t port, uint16_t rxq, uint16_t txq, bool rss, bool *rss_applied) {
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
    return rte_eth_dev_configure(port, rxq, txq, &conf);
}
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
static inline void sy_qsbr_synchronize(struct rte_rcu_qsbr *v) { rte_rcu_qsbr_synchronize(v, RTE_QSBR_THRID_INVALID); }

#endif
