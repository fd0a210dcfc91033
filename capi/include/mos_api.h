/*
 * mos_api.h: mOS's monitoring API (monitor sockets, filters, events, callbacks, peek,
 * socket options, packets, timers, per-flow user context), as libmos provides it over a
 * running mos-sensor. Written for mos from mOS's manual pages; the names, types and values
 * are mOS's, so that a monitoring program written for mOS compiles unchanged:
 *
 *     cc prog.c $(pkg-config --cflags --libs libmos)
 *
 * docs/C-API.md lists where mos behaves differently from mOS.
 */
#ifndef MOS_MOS_API_H
#define MOS_MOS_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include <linux/if_ether.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <arpa/inet.h>

#include "mtcp_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The version of libmos this header belongs to. */
#define LIBMOS_VERSION_MAJOR 0
#define LIBMOS_VERSION_MINOR 1

/* Hook points (mtcp_register_callback's hook_point). Their bits do not overlap any event's.
 * MOS_HK_SND is bit 31, written so that it fits an int. */
enum mtcp_hook_point {
	MOS_NULL = (1 << 29),   /* events of no stack update: new data, end, orphans, raw */
	MOS_HK_RCV = (1 << 30), /* right after the receiving side's stack was updated */
	MOS_HK_SND = (-2147483647 - 1) /* (1 << 31): right after the sending side's */
};

/* Built-in events. mos raises all but the deprecated ones (PKT_OUT, CONN_SETUP,
 * DEBUG_MESSAGE), which may be registered for and never fire. */
enum mos_event_type {
	MOS_NULL_EVENT = 0,
	MOS_ON_PKT_IN = (1 << 0),
	MOS_ON_PKT_OUT = (1 << 1),
	MOS_ON_CONN_START = (1 << 2),
	MOS_ON_CONN_SETUP = (1 << 3),
	MOS_ON_CONN_NEW_DATA = (1 << 4),
	MOS_ON_ERROR = (1 << 5),
	MOS_ON_TIMEOUT = (1 << 6),
	MOS_ON_TCP_STATE_CHANGE = (1 << 7),
	MOS_ON_ORPHAN = (1 << 8),
	MOS_ON_REXMIT = (1 << 9),
	MOS_ON_CONN_END = (1 << 10),
	MOS_ON_DEBUG_MESSAGE = (1 << 11)
};

/* mtcp_setlastpkt()'s options (mos is a passive monitor: the call fails with ENOTSUP). */
#define MOS_ETH_HDR (1 << 0)
#define MOS_IP_HDR (1 << 1)
#define MOS_TCP_HDR (1 << 2)
#define MOS_TCP_PAYLOAD (1 << 3)
#define MOS_UPDATE_IP_CHKSUM (1 << 4)
#define MOS_UPDATE_TCP_CHKSUM (1 << 5)
#define MOS_DROP (1 << 6)
#define MOS_OVERWRITE (1 << 7)
#define MOS_CHOMP (1 << 8)
#define MOS_INSERT (1 << 9)

/* A frame, as mtcp_getlastpkt() copies it. Numbers are in host byte order; the four pointers
 * point into the library's copy of the frame, which the next mtcp_getlastpkt() of the same
 * context reuses. A raw socket's packet has no TCP part (tcph and payload NULL). */
struct pkt_info {
	uint32_t cur_ts;     /* capture time, ms (wraps) */
	int8_t in_ifidx;     /* input interface (0) */
	uint16_t eth_len;    /* bytes of the frame */
	uint16_t ip_len;     /* bytes of the IP packet */
	uint64_t offset;     /* stream offset of the payload's first byte */
	uint16_t payloadlen; /* payload bytes */
	uint32_t seq;
	uint32_t ack_seq;
	uint16_t window;
	struct ethhdr *ethh; /* NULL for a frame without an Ethernet header */
	struct iphdr *iph;
	struct tcphdr *tcph;
	uint8_t *payload;
};

/* The bytes of struct pkt_info before its pointers. */
#define PKT_INFO_LEN offsetof(struct pkt_info, ethh)

/* What a user-defined event's filter gets (mtcp_define_event's arg, copied). */
typedef struct filter_arg {
	void *arg;
	size_t len;
} filter_arg_t;

/* Socket-option level of monitoring sockets. */
#ifndef SOL_SOCKET
#define SOL_SOCKET 0xffff
#endif
#define SOL_MONSOCKET 0xfffe

/* Monitoring-socket options (SOL_MONSOCKET). */
enum mos_socket_opts {
	MOS_FRAGINFO_CLIBUF = 0x01,
	MOS_FRAGINFO_SVRBUF = 0x02,
	MOS_INFO_CLIBUF = 0x03,
	MOS_INFO_SVRBUF = 0x04,
	MOS_TCP_STATE_CLI = 0x05,
	MOS_TCP_STATE_SVR = 0x06,
	MOS_TIMESTAMP = 0x07,   /* not implemented by mOS or mos */
	MOS_CLIBUF = 0x09,
	MOS_SVRBUF = 0x0a,
	MOS_SEQ_REMAP = 0x0b,   /* not implemented by mOS or mos */
	MOS_STOP_MON = 0x0c,
	MOS_FRAG_CLIBUF = 0x0d, /* not implemented by mOS or mos */
	MOS_FRAG_SVRBUF = 0x0e, /* not implemented by mOS or mos */
	MOS_CLIOVERLAP = 0x0f,
	MOS_SVROVERLAP = 0x10
};

/* mos's own options (not mOS's), for mtcp_getsockopt on a per-flow socket: a uint64_t, the
 * bytes of the client's (server's) stream that this socket's mtcp_peek skipped so far, lost
 * to overruns or never captured. mtcp_peek reports a loss as -(bytes lost) with ENODATA, and a
 * loss of one byte reads like "no data" (-1, ENODATA): these count every byte. */
#define MOS_LOST_CLIBUF 0x100
#define MOS_LOST_SVRBUF 0x101

/* MOS_INFO_CLIBUF / MOS_INFO_SVRBUF: a receive buffer as TCP sequence numbers. */
struct tcp_buf_info {
	uint32_t tcpbi_init_seq;           /* the buffer's first byte (stream offset 0) */
	uint32_t tcpbi_last_byte_read;     /* equal to tcpbi_next_byte_expected */
	uint32_t tcpbi_next_byte_expected; /* one past the last in-order byte */
	uint32_t tcpbi_last_byte_received; /* one past the highest byte received */
};

/* MOS_FRAGINFO_CLIBUF / MOS_FRAGINFO_SVRBUF: one run of held bytes. */
struct tcp_ring_fragment {
	uint64_t offset; /* stream offset, as mtcp_ppeek() takes it */
	uint32_t len;
};

/* Emulated TCP states (MOS_TCP_STATE_CLI / MOS_TCP_STATE_SVR). */
enum tcpstate {
	TCP_CLOSED = 0,
	TCP_LISTEN = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RCVD = 3,
	TCP_ESTABLISHED = 4,
	TCP_FIN_WAIT_1 = 5,
	TCP_FIN_WAIT_2 = 6,
	TCP_CLOSE_WAIT = 7,
	TCP_CLOSING = 8,
	TCP_LAST_ACK = 9,
	TCP_TIME_WAIT = 10
};

/* Overlap policies (MOS_CLIOVERLAP / MOS_SVROVERLAP). */
enum {
	MOS_OVERLAP_POLICY_FIRST = 0,
	MOS_OVERLAP_POLICY_LAST = 1,
	MOS_OVERLAP_CNT = 2
};

/* An event: a built-in one's bit, or a user-defined one's id. */
typedef uint64_t event_t;

/* Sides. */
enum {
	MOS_SIDE_CLI = 0,
	MOS_SIDE_SVR = 1,
	MOS_SIDE_BOTH = 2
};

/* A callback: the context, the per-flow socket (or the monitoring socket for orphans and raw
 * packets), the side (MOS_NULL when there is none), the event it is called for, and the
 * user-defined event's filter argument (zeros for a built-in event). */
typedef void (*callback_t)(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg);

/* A user-defined event's filter: the event fires when it returns true. */
typedef bool (*filter_t)(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg);

/* Filters of a monitoring socket, as libpcap expressions (NULL: everything). */
union monitor_filter {
	char *raw_pkt_filter; /* MOS_SOCK_MONITOR_RAW: each packet */
#if defined(__GNUC__)
	__extension__
#endif
	struct {
		char *stream_syn_filter;    /* MOS_SOCK_MONITOR_STREAM: each connection's first packet */
		char *stream_orphan_filter; /* MOS_SOCK_MONITOR_STREAM: packets of no connection */
	};
};
typedef union monitor_filter *monitor_filter_t;

int mtcp_bind_monitor_filter(mctx_t mctx, int sock, monitor_filter_t ft);
int mtcp_register_callback(mctx_t mctx, int sock, event_t event, int hook_point, callback_t cb);
event_t mtcp_alloc_event(event_t event);
event_t mtcp_define_event(event_t event, filter_t filter, struct filter_arg *arg);
int mtcp_raise_event(mctx_t mctx, event_t event);
int mtcp_set_uctx(mctx_t mctx, int sock, void *uctx);
void *mtcp_get_uctx(mctx_t mctx, int sock);
ssize_t mtcp_peek(mctx_t mctx, int sock, int side, char *buf, size_t len);
ssize_t mtcp_ppeek(mctx_t mctx, int sock, int side, char *buf, size_t count, uint64_t off);

/* mOS's switch for copying frames in mtcp_getlastpkt(); libmos always copies. */
#define MTCP_CB_GETCURPKT_CREATE_COPY

int mtcp_getlastpkt(mctx_t mctx, int sock, int side, struct pkt_info *p);
int mtcp_settimer(mctx_t mctx, int id, struct timeval *timeout, callback_t cb);
uint32_t mtcp_cb_get_ts(mctx_t mctx);
void mtcp_app_join(mctx_t mctx);
int mtcp_getpeername(mctx_t mctx, int sock, struct sockaddr *saddr, socklen_t *addrlen, int side);
int mtcp_setlastpkt(mctx_t mctx, int sock, int side, off_t offset, byte *data, uint16_t datalen,
		    int option);
int mtcp_sendpkt(mctx_t mctx, int sock, const struct pkt_info *pkt);

#ifdef __cplusplus
}
#endif

#endif /* MOS_MOS_API_H */
