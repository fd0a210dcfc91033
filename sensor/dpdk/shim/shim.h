/* C shim for the DPDK 22.11 functions that are static inline (or macros) in
 * the headers and so have no symbol to link against from Rust. */
#ifndef MOS_DPDK_SHIM_H
#define MOS_DPDK_SHIM_H

#include <stdint.h>

struct rte_mbuf;

uint16_t mos_shim_rx_burst(uint16_t port_id, uint16_t queue_id,
			   struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
void mos_shim_pktmbuf_free(struct rte_mbuf *m);
const void *mos_shim_pktmbuf_mtod(const struct rte_mbuf *m);
uint16_t mos_shim_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t mos_shim_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t mos_shim_pktmbuf_nb_segs(const struct rte_mbuf *m);
const struct rte_mbuf *mos_shim_mbuf_next(const struct rte_mbuf *m);
uint64_t mos_shim_mbuf_ol_flags(const struct rte_mbuf *m);
uint64_t mos_shim_mbuf_dynfield_u64(const struct rte_mbuf *m, int offset);
uint32_t mos_shim_mbuf_rss_hash(const struct rte_mbuf *m);
unsigned int mos_shim_lcore_id(void);
int mos_shim_errno(void);
uint32_t mos_shim_mbuf_default_buf_size(void);

/* Constants that are RTE_BIT64() macros, which bindgen cannot evaluate. */
uint64_t mos_shim_rss_ip_tcp_udp(void);
uint64_t mos_shim_rx_offload_timestamp(void);

#endif
