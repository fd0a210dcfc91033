/*
 * t_packet: packets and addresses (mtcp_getlastpkt, mtcp_getpeername, and mtcp_setlastpkt /
 * mtcp_sendpkt, which a passive monitor refuses with ENOTSUP).
 *
 *   t_packet RAW_FILTER   every connection: on MOS_ON_CONN_NEW_DATA, mtcp_getlastpkt's frame
 *                         is checked against its own headers and against mtcp_ppeek at its
 *                         stream offset; at CONN_END, `peer client=A server=B` from
 *                         mtcp_getpeername (MOS_SIDE_BOTH and each side). A raw socket with
 *                         RAW_FILTER prints each packet: `raw eth_len=N ip_len=M ts=MS`.
 *   t_packet nopackets    run with MOS_PACKETS=0: mtcp_getlastpkt gives ENODATA.
 *
 * Prints `errno` lines, `FAIL ...` and `done failures=N`.
 */
#include "check.h"

#include <linux/ipv6.h>

static int sock, raw_sock, nopackets;
static long checked_frames, ppeek_matches, raw_packets, errors_checked, nodata_checked;

struct flow {
	int ends;
};

/* The frame's own headers agree with what pkt_info says of it. */
static void check_frame(const struct pkt_info *p, int tcp_expected)
{
	const uint8_t *ip = (const uint8_t *)p->iph;
	int version;
	if (ip == NULL) {
		FAIL("pkt_info without an IP header");
		return;
	}
	version = ip[0] >> 4;
	if (version == 4) {
		const struct iphdr *h = p->iph;
		CHECK(ntohs(h->tot_len) == p->ip_len || ntohs(h->tot_len) < p->ip_len,
		      "IPv4 total length %u, ip_len %u", (unsigned)ntohs(h->tot_len),
		      (unsigned)p->ip_len);
	} else if (version == 6) {
		const struct ipv6hdr *h = (const struct ipv6hdr *)(const void *)ip;
		CHECK(40u + ntohs(h->payload_len) <= p->ip_len, "IPv6 payload length %u, ip_len %u",
		      (unsigned)ntohs(h->payload_len), (unsigned)p->ip_len);
	} else {
		FAIL("IP version %d", version);
		return;
	}
	if (p->ethh != NULL)
		CHECK((const uint8_t *)p->ethh + p->eth_len == ip + p->ip_len,
		      "the frame (%u bytes) and its IP packet (%u) end apart", (unsigned)p->eth_len,
		      (unsigned)p->ip_len);
	CHECK(p->ip_len <= p->eth_len, "ip_len %u > eth_len %u", (unsigned)p->ip_len,
	      (unsigned)p->eth_len);
	if (!tcp_expected)
		return;
	if (p->tcph == NULL) {
		FAIL("a connection's frame without a TCP header");
		return;
	}
	CHECK(ntohl(p->tcph->seq) == p->seq, "seq %u, the header says %u", p->seq,
	      ntohl(p->tcph->seq));
	CHECK(ntohl(p->tcph->ack_seq) == p->ack_seq, "ack_seq %u, the header says %u", p->ack_seq,
	      ntohl(p->tcph->ack_seq));
	CHECK(ntohs(p->tcph->window) == p->window, "window %u, the header says %u",
	      (unsigned)p->window, (unsigned)ntohs(p->tcph->window));
	CHECK(p->payload == (const uint8_t *)p->tcph + 4 * p->tcph->doff,
	      "the payload does not follow the TCP header");
	CHECK(p->payload + p->payloadlen <= ip + p->ip_len, "payload past the IP packet");
	checked_frames++;
}

static void check_errors(mctx_t mctx, int s, int side)
{
	struct pkt_info pi;
	struct sockaddr_storage ss[2];
	socklen_t len;
	EXPECT_ERRNO("getlastpkt_null_mctx", mtcp_getlastpkt(NULL, s, side, &pi), -1, EACCES);
	EXPECT_ERRNO("getlastpkt_bad_id", mtcp_getlastpkt(mctx, 1 << 30, side, &pi), -1, EBADF);
	EXPECT_ERRNO("getlastpkt_negative_id", mtcp_getlastpkt(mctx, -1, side, &pi), -1, EBADF);
	len = sizeof ss;
	EXPECT_ERRNO("getpeername_bad_id",
		     mtcp_getpeername(mctx, 1 << 30, (struct sockaddr *)ss, &len, MOS_SIDE_CLI), -1,
		     EBADF);
	len = sizeof ss;
	EXPECT_ERRNO("getpeername_monitoring_socket",
		     mtcp_getpeername(mctx, sock, (struct sockaddr *)ss, &len, MOS_SIDE_CLI), -1,
		     ENOTCONN);
	len = 4;
	EXPECT_ERRNO("getpeername_short_addrlen",
		     mtcp_getpeername(mctx, s, (struct sockaddr *)ss, &len, MOS_SIDE_CLI), -1,
		     EINVAL);
	len = (socklen_t)-1; /* the page's example: a negative addrlen */
	EXPECT_ERRNO("getpeername_negative_addrlen",
		     mtcp_getpeername(mctx, s, (struct sockaddr *)ss, &len, MOS_SIDE_CLI), -1,
		     EINVAL);
	len = 0;
	EXPECT_ERRNO("getpeername_zero_addrlen",
		     mtcp_getpeername(mctx, s, (struct sockaddr *)ss, &len, MOS_SIDE_SVR), -1, EINVAL);
	len = sizeof(struct sockaddr_in6); /* room for one address, not two */
	EXPECT_ERRNO("getpeername_both_short",
		     mtcp_getpeername(mctx, s, (struct sockaddr *)ss, &len, MOS_SIDE_BOTH), -1,
		     EINVAL);
	EXPECT_ERRNO("getpeername_null_addrlen",
		     mtcp_getpeername(mctx, s, (struct sockaddr *)ss, NULL, MOS_SIDE_CLI), -1, EINVAL);
	len = sizeof ss;
	EXPECT_ERRNO("getpeername_bad_side",
		     mtcp_getpeername(mctx, s, (struct sockaddr *)ss, &len, 7), -1, EINVAL);
	EXPECT_ERRNO("setlastpkt_enotsup",
		     mtcp_setlastpkt(mctx, s, side, 0, (byte *)"x", 1, MOS_OVERWRITE | MOS_TCP_PAYLOAD),
		     -1, ENOTSUP);
	if (mtcp_getlastpkt(mctx, s, side, &pi) == 0)
		EXPECT_ERRNO("sendpkt_enotsup", mtcp_sendpkt(mctx, s, &pi), -1, ENOTSUP);
	else
		FAIL("getlastpkt: errno %s", errname(errno));
	errors_checked++;
}

static void on_data(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	static char buf[65536];
	struct pkt_info pi;
	ssize_t n;
	(void)event, (void)arg;
	if (side != MOS_SIDE_CLI && side != MOS_SIDE_SVR) {
		FAIL("CONN_NEW_DATA with side %d", side);
		return;
	}
	if (nopackets) {
		if (nodata_checked++ == 0)
			EXPECT_ERRNO("getlastpkt_no_packets", mtcp_getlastpkt(mctx, s, side, &pi), -1,
				     ENODATA);
		return;
	}
	if (errors_checked == 0)
		check_errors(mctx, s, side);
	memset(&pi, 0, sizeof pi);
	if (mtcp_getlastpkt(mctx, s, side, &pi) != 0) {
		FAIL("getlastpkt in CONN_NEW_DATA: errno %s", errname(errno));
		return;
	}
	check_frame(&pi, 1);
	if (pi.payloadlen == 0)
		return;
	/* The frame's payload is the stream's bytes at its offset. */
	if (pi.offset == UINT64_MAX) {
		FAIL("the frame that raised CONN_NEW_DATA on side %d (seq %u, %u payload bytes) has "
		     "no stream offset (UINT64_MAX)",
		     side, pi.seq, (unsigned)pi.payloadlen);
		return;
	}
	n = mtcp_ppeek(mctx, s, side, buf, pi.payloadlen, pi.offset);
	if (n == (ssize_t)pi.payloadlen && memcmp(buf, pi.payload, (size_t)n) == 0)
		ppeek_matches++;
	else
		FAIL("ppeek at the frame's offset %llu gave %ld of %u bytes (errno %s) or others",
		     (unsigned long long)pi.offset, (long)n, (unsigned)pi.payloadlen,
		     errname(errno));
}

static void on_end(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct sockaddr_storage one;
	struct sockaddr both[2 * sizeof(struct sockaddr_in6) / sizeof(struct sockaddr) + 1];
	char cli[80], svr[80], b_cli[80], b_svr[80];
	socklen_t len = sizeof both;
	struct flow *f;
	(void)side, (void)event, (void)arg;
	f = (struct flow *)mtcp_get_uctx(mctx, s);
	if (f == NULL) {
		f = (struct flow *)calloc(1, sizeof *f);
		if (f == NULL || mtcp_set_uctx(mctx, s, f) != 0) {
			FAIL("set_uctx: errno %s", errname(errno));
			free(f);
			return;
		}
	}
	if (++f->ends < 2)
		return;
	mtcp_set_uctx(mctx, s, NULL);
	free(f);
	if (mtcp_getpeername(mctx, s, both, &len, MOS_SIDE_BOTH) != 0) {
		FAIL("getpeername(MOS_SIDE_BOTH): errno %s", errname(errno));
		return;
	}
	if (both[0].sa_family == AF_INET) {
		/* As mOS: addr[MOS_SIDE_CLI] and addr[MOS_SIDE_SVR], each a struct sockaddr. */
		CHECK(len == 2 * sizeof(struct sockaddr), "addrlen %u for two IPv4 addresses",
		      (unsigned)len);
		fmt_addr(&both[MOS_SIDE_CLI], b_cli, sizeof b_cli);
		fmt_addr(&both[MOS_SIDE_SVR], b_svr, sizeof b_svr);
	} else {
		/* IPv6: two struct sockaddr_in6, client first. */
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)both;
		CHECK(len == 2 * sizeof(struct sockaddr_in6), "addrlen %u for two IPv6 addresses",
		      (unsigned)len);
		fmt_addr((const struct sockaddr *)(const void *)&s6[0], b_cli, sizeof b_cli);
		fmt_addr((const struct sockaddr *)(const void *)&s6[1], b_svr, sizeof b_svr);
	}
	if (peer_names(mctx, s, cli, svr, sizeof cli) != 0) {
		FAIL("getpeername of one side: errno %s", errname(errno));
		return;
	}
	CHECK(strcmp(cli, b_cli) == 0 && strcmp(svr, b_svr) == 0,
	      "MOS_SIDE_BOTH gives %s %s, each side %s %s", b_cli, b_svr, cli, svr);
	/* An IPv6 address does not fit the struct sockaddr of mOS's IPv4 convention. */
	len = sizeof(struct sockaddr);
	if (both[0].sa_family == AF_INET6) {
		EXPECT_ERRNO("getpeername_ipv6_in_sockaddr",
			     mtcp_getpeername(mctx, s, (struct sockaddr *)&one, &len, MOS_SIDE_CLI),
			     -1, EINVAL);
	} else {
		CHECK(mtcp_getpeername(mctx, s, (struct sockaddr *)&one, &len, MOS_SIDE_CLI) == 0 &&
			      len == sizeof(struct sockaddr_in),
		      "getpeername into a struct sockaddr: errno %s, addrlen %u", errname(errno),
		      (unsigned)len);
	}
	printf("peer client=%s server=%s\n", cli, svr);
}

static void on_raw(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct pkt_info pi;
	(void)event, (void)arg;
	CHECK(s == raw_sock && side == MOS_NULL, "a raw packet on socket %d side %d", s, side);
	memset(&pi, 0, sizeof pi);
	if (mtcp_getlastpkt(mctx, s, side, &pi) != 0) {
		FAIL("getlastpkt of a raw packet: errno %s", errname(errno));
		return;
	}
	check_frame(&pi, 0);
	raw_packets++;
	printf("raw eth_len=%u ip_len=%u ts=%u\n", (unsigned)pi.eth_len, (unsigned)pi.ip_len,
	       (unsigned)pi.cur_ts);
}

int main(int argc, char **argv)
{
	union monitor_filter ft;
	struct pkt_info pi;
	mctx_t ctx;
	setup_output();
	if (argc != 2) {
		fprintf(stderr, "usage: t_packet RAW_FILTER | nopackets\n");
		return 2;
	}
	nopackets = strcmp(argv[1], "nopackets") == 0;
	if (mtcp_init(NULL) != 0) {
		FAIL("mtcp_init: errno %s", errname(errno));
		return finish();
	}
	ctx = mtcp_create_context(0);
	if (ctx == NULL) {
		FAIL("mtcp_create_context(0): errno %s", errname(errno));
		return finish();
	}
	/* The inline calls, outside callbacks too. */
	memset(&pi, 0, sizeof pi);
	EXPECT_ERRNO("sendpkt_outside", mtcp_sendpkt(ctx, 0, &pi), -1, ENOTSUP);
	EXPECT_ERRNO("setlastpkt_outside", mtcp_setlastpkt(ctx, 0, MOS_SIDE_CLI, 0, NULL, 0, MOS_DROP),
		     -1, ENOTSUP);
	sock = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	CHECK(sock >= 0, "mtcp_socket: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_data) == 0,
	      "register CONN_NEW_DATA: errno %s", errname(errno));
	if (!nopackets) {
		CHECK(mtcp_register_callback(ctx, sock, MOS_ON_CONN_END, MOS_NULL, on_end) == 0,
		      "register CONN_END: errno %s", errname(errno));
		raw_sock = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_RAW, 0);
		CHECK(raw_sock >= 0, "raw mtcp_socket: errno %s", errname(errno));
		memset(&ft, 0, sizeof ft);
		ft.raw_pkt_filter = argv[1];
		CHECK(mtcp_bind_monitor_filter(ctx, raw_sock, &ft) == 0, "bind %s: errno %s", argv[1],
		      errname(errno));
		CHECK(mtcp_register_callback(ctx, raw_sock, MOS_ON_ORPHAN, MOS_NULL, on_raw) == 0,
		      "register raw: errno %s", errname(errno));
	}
	mtcp_app_join(ctx);
	printf("counts frames=%ld ppeek_matches=%ld raw=%ld\n", checked_frames, ppeek_matches,
	       raw_packets);
	if (nopackets) {
		CHECK(nodata_checked > 0, "no CONN_NEW_DATA came");
	} else {
		CHECK(errors_checked == 1, "the errors were checked %ld times", errors_checked);
		CHECK(ppeek_matches > 0, "no frame's payload was compared");
	}
	mtcp_destroy_context(ctx);
	mtcp_destroy();
	return finish();
}
