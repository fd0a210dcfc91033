/* See shim.h. Each function is a plain, exported wrapper of one static
 * inline function, macro or field access from the DPDK headers. */
#include <string.h>

#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

#include "shim.h"

uint16_t mos_shim_rx_burst(uint16_t port_id, uint16_t queue_id,
			   struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

void mos_shim_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

const void *mos_shim_pktmbuf_mtod(const struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, const void *);
}

uint16_t mos_shim_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint32_t mos_shim_pktmbuf_pkt_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_pkt_len(m);
}

uint16_t mos_shim_pktmbuf_nb_segs(const struct rte_mbuf *m)
{
	return m->nb_segs;
}

const struct rte_mbuf *mos_shim_mbuf_next(const struct rte_mbuf *m)
{
	return m->next;
}

uint64_t mos_shim_mbuf_ol_flags(const struct rte_mbuf *m)
{
	return m->ol_flags;
}

uint64_t mos_shim_mbuf_dynfield_u64(const struct rte_mbuf *m, int offset)
{
	uint64_t v;

	/* The dynamic field area is not guaranteed 8-byte aligned at every
	 * offset a caller could pass; memcpy reads it either way. */
	memcpy(&v, RTE_MBUF_DYNFIELD(m, offset, const uint8_t *), sizeof(v));
	return v;
}

uint32_t mos_shim_mbuf_rss_hash(const struct rte_mbuf *m)
{
	return m->hash.rss;
}

unsigned int mos_shim_lcore_id(void)
{
	return rte_lcore_id();
}

int mos_shim_errno(void)
{
	return rte_errno;
}

uint32_t mos_shim_mbuf_default_buf_size(void)
{
	return RTE_MBUF_DEFAULT_BUF_SIZE;
}

uint64_t mos_shim_rss_ip_tcp_udp(void)
{
	return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP;
}

uint64_t mos_shim_rx_offload_timestamp(void)
{
	return RTE_ETH_RX_OFFLOAD_TIMESTAMP;
}
