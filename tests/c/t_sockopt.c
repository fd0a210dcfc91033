/*
 * t_sockopt: socket options (mtcp_getsockopt, mtcp_setsockopt at SOL_MONSOCKET).
 *
 *   t_sockopt OVERLAP    OVERLAP: the sensor's policy code (0 first, 1 last)
 *
 * Socket M (every connection):
 *   MOS_ON_TCP_STATE_CHANGE (both hooks): counted per connection
 *   MOS_ON_PKT_IN at MOS_HK_RCV: MOS_FRAGINFO_* of the receiving side; each fragment read with
 *     mtcp_ppeek: `frag client=A server=B side=S offset=O len=L got=N sha1=H`
 *   MOS_ON_CONN_END: on the last one, MOS_TCP_STATE_CLI/SVR, MOS_INFO_CLIBUF/SVRBUF and the
 *     overlap options: `state client=A server=B cli=N svr=N changes=K` and
 *     `info client=A server=B svr_init=.. svr_next=.. svr_recv=.. cli_init=.. ...`
 * Socket S: MOS_STOP_MON (both sides) on each connection's first CONN_NEW_DATA; no event of a
 *   stopped connection may come after (`stopped conns=N`).
 * Set up with MOS_CLIBUF/MOS_SVRBUF 0 (accepted, as mOS programs set it) and the overlap
 * options. Prints `errno` lines, `FAIL ...` and `done failures=N`.
 */
#include "check.h"

#define MAX_FRAGS 64
#define MAX_STOPPED 4096

static int sock_m, sock_s, overlap;
static long frag_lists, frags_read, errors_checked, stopped_n, after_stop;
static char stopped[MAX_STOPPED][170];

struct flow {
	int changes;
	int ends;
};

static struct flow *flow_of(mctx_t mctx, int s)
{
	struct flow *f = (struct flow *)mtcp_get_uctx(mctx, s);
	if (f == NULL) {
		f = (struct flow *)calloc(1, sizeof *f);
		if (f == NULL || mtcp_set_uctx(mctx, s, f) != 0) {
			FAIL("set_uctx: errno %s", errname(errno));
			free(f);
			return NULL;
		}
	}
	return f;
}

static int get_int(mctx_t mctx, int s, int opt, int *v)
{
	socklen_t len = sizeof *v;
	int r = mtcp_getsockopt(mctx, s, SOL_MONSOCKET, opt, v, &len);
	if (r == 0)
		CHECK(len == sizeof *v, "option %#x: optlen %u", opt, (unsigned)len);
	return r;
}

static void check_errors(mctx_t mctx, int s)
{
	int v = 0, side = MOS_SIDE_BOTH;
	socklen_t len = sizeof v;
	EXPECT_ERRNO("getsockopt_null_mctx",
		     mtcp_getsockopt(NULL, s, SOL_MONSOCKET, MOS_TCP_STATE_CLI, &v, &len), -1,
		     EACCES);
	EXPECT_ERRNO("getsockopt_bad_id",
		     mtcp_getsockopt(mctx, 1 << 30, SOL_MONSOCKET, MOS_TCP_STATE_CLI, &v, &len), -1,
		     EBADF);
	EXPECT_ERRNO("getsockopt_negative_id",
		     mtcp_getsockopt(mctx, -1, SOL_MONSOCKET, MOS_TCP_STATE_CLI, &v, &len), -1, EBADF);
	EXPECT_ERRNO("getsockopt_unknown_level",
		     mtcp_getsockopt(mctx, s, 12345, MOS_TCP_STATE_CLI, &v, &len), -1, ENOSYS);
	EXPECT_ERRNO("getsockopt_unknown_option",
		     mtcp_getsockopt(mctx, s, SOL_MONSOCKET, 0x7f, &v, &len), -1, ENOSYS);
	EXPECT_ERRNO("getsockopt_timestamp",
		     mtcp_getsockopt(mctx, s, SOL_MONSOCKET, MOS_TIMESTAMP, &v, &len), -1, ENOSYS);
	EXPECT_ERRNO("getsockopt_monitoring_socket",
		     mtcp_getsockopt(mctx, sock_m, SOL_MONSOCKET, MOS_TCP_STATE_CLI, &v, &len), -1,
		     ENOTSOCK);
	EXPECT_ERRNO("setsockopt_null_mctx",
		     mtcp_setsockopt(NULL, s, SOL_MONSOCKET, MOS_CLIBUF, &v, sizeof v), -1, EACCES);
	EXPECT_ERRNO("setsockopt_bad_id",
		     mtcp_setsockopt(mctx, 1 << 30, SOL_MONSOCKET, MOS_STOP_MON, &side, sizeof side),
		     -1, EBADF);
	EXPECT_ERRNO("setsockopt_unknown_level",
		     mtcp_setsockopt(mctx, s, 12345, MOS_CLIBUF, &v, sizeof v), -1, ENOSYS);
	EXPECT_ERRNO("setsockopt_unknown_option",
		     mtcp_setsockopt(mctx, s, SOL_MONSOCKET, 0x7f, &v, sizeof v), -1, ENOSYS);
	EXPECT_ERRNO("setsockopt_seq_remap",
		     mtcp_setsockopt(mctx, s, SOL_MONSOCKET, MOS_SEQ_REMAP, &v, sizeof v), -1,
		     ENOSYS);
	EXPECT_ERRNO("setsockopt_stop_mon_monitoring_socket",
		     mtcp_setsockopt(mctx, sock_m, SOL_MONSOCKET, MOS_STOP_MON, &side, sizeof side),
		     -1, ENOTSOCK);
	errors_checked++;
}

static void on_change(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct flow *f;
	(void)side, (void)arg;
	CHECK(event == MOS_ON_TCP_STATE_CHANGE, "on_change for %#llx", (unsigned long long)event);
	f = flow_of(mctx, s);
	if (f != NULL)
		f->changes++;
	if (errors_checked == 0)
		check_errors(mctx, s);
}

static void on_pkt(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct tcp_ring_fragment fr[MAX_FRAGS];
	socklen_t len = MAX_FRAGS; /* as in mOS: a number of fragments, in and out */
	char cli[80], svr[80];
	int opt, i, n;
	(void)arg;
	CHECK(event == MOS_ON_PKT_IN, "on_pkt for %#llx", (unsigned long long)event);
	if (side != MOS_SIDE_CLI && side != MOS_SIDE_SVR) {
		FAIL("PKT_IN with side %d", side);
		return;
	}
	opt = side == MOS_SIDE_CLI ? MOS_FRAGINFO_CLIBUF : MOS_FRAGINFO_SVRBUF;
	if (mtcp_getsockopt(mctx, s, SOL_MONSOCKET, opt, fr, &len) != 0) {
		FAIL("MOS_FRAGINFO side %d: errno %s", side, errname(errno));
		return;
	}
	CHECK(len <= MAX_FRAGS, "MOS_FRAGINFO optlen %u for room for %d", (unsigned)len, MAX_FRAGS);
	n = (int)len;
	frag_lists++;
	if (n == 0)
		return;
	if (peer_names(mctx, s, cli, svr, sizeof cli) != 0) {
		FAIL("getpeername: errno %s", errname(errno));
		return;
	}
	for (i = 0; i < n; i++) {
		static char buf[1 << 20];
		struct sha1 sh;
		char h[41];
		ssize_t got;
		size_t want = fr[i].len < sizeof buf ? fr[i].len : sizeof buf;
		CHECK(fr[i].len > 0, "an empty fragment at %llu", (unsigned long long)fr[i].offset);
		CHECK(i == 0 || fr[i].offset > fr[i - 1].offset + fr[i - 1].len,
		      "fragments out of order or touching");
		got = mtcp_ppeek(mctx, s, side, buf, want, fr[i].offset);
		if (got <= 0) {
			FAIL("ppeek of the fragment at %llu (%u bytes): %ld errno %s",
			     (unsigned long long)fr[i].offset, (unsigned)fr[i].len, (long)got,
			     errname(errno));
			continue;
		}
		sha1_init(&sh);
		sha1_update(&sh, buf, (size_t)got);
		sha1_hex(&sh, h);
		frags_read++;
		printf("frag client=%s server=%s side=%d offset=%llu len=%u got=%ld sha1=%s\n", cli,
		       svr, side, (unsigned long long)fr[i].offset, (unsigned)fr[i].len, (long)got,
		       h);
	}
}

static void print_info(mctx_t mctx, int s, const char *cli, const char *svr)
{
	struct tcp_buf_info bi[2];
	int ok[2], side;
	for (side = 0; side < 2; side++) {
		socklen_t len = sizeof bi[side];
		int opt = side == MOS_SIDE_CLI ? MOS_INFO_CLIBUF : MOS_INFO_SVRBUF;
		ok[side] = mtcp_getsockopt(mctx, s, SOL_MONSOCKET, opt, &bi[side], &len) == 0;
		if (!ok[side]) {
			CHECK(errno == ENODATA, "MOS_INFO side %d: errno %s", side, errname(errno));
			continue;
		}
		CHECK(len == sizeof bi[side], "MOS_INFO optlen %u", (unsigned)len);
		CHECK(bi[side].tcpbi_last_byte_read == bi[side].tcpbi_next_byte_expected,
		      "last_byte_read %u != next_byte_expected %u", bi[side].tcpbi_last_byte_read,
		      bi[side].tcpbi_next_byte_expected);
		CHECK((uint32_t)(bi[side].tcpbi_last_byte_received - bi[side].tcpbi_next_byte_expected) <
			      (1u << 31),
		      "last_byte_received %u before next_byte_expected %u",
		      bi[side].tcpbi_last_byte_received, bi[side].tcpbi_next_byte_expected);
	}
	printf("info client=%s server=%s", cli, svr);
	for (side = 1; side >= 0; side--) {
		const char *n = side == MOS_SIDE_CLI ? "cli" : "svr";
		if (ok[side])
			printf(" %s_init=%u %s_next=%u %s_recv=%u", n, bi[side].tcpbi_init_seq, n,
			       bi[side].tcpbi_next_byte_expected, n,
			       bi[side].tcpbi_last_byte_received);
		else
			printf(" %s_init=none", n);
	}
	printf("\n");
}

static void on_end(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	char cli[80], svr[80];
	struct flow *f;
	int st[2], ov[2];
	(void)side, (void)event, (void)arg;
	f = flow_of(mctx, s);
	if (f == NULL)
		return;
	if (++f->ends < 2)
		return;
	if (peer_names(mctx, s, cli, svr, sizeof cli) != 0) {
		FAIL("getpeername: errno %s", errname(errno));
		goto out;
	}
	if (get_int(mctx, s, MOS_TCP_STATE_CLI, &st[0]) != 0 ||
	    get_int(mctx, s, MOS_TCP_STATE_SVR, &st[1]) != 0) {
		FAIL("MOS_TCP_STATE_*: errno %s", errname(errno));
		goto out;
	}
	CHECK(st[0] >= TCP_CLOSED && st[0] <= TCP_TIME_WAIT && st[1] >= TCP_CLOSED &&
		      st[1] <= TCP_TIME_WAIT,
	      "states %d %d out of range", st[0], st[1]);
	printf("state client=%s server=%s cli=%d svr=%d changes=%d\n", cli, svr, st[0], st[1],
	       f->changes);
	print_info(mctx, s, cli, svr);
	if (get_int(mctx, s, MOS_CLIOVERLAP, &ov[0]) != 0 ||
	    get_int(mctx, s, MOS_SVROVERLAP, &ov[1]) != 0)
		FAIL("MOS_*OVERLAP: errno %s", errname(errno));
	else
		CHECK(ov[0] == overlap && ov[1] == overlap, "overlap policies %d %d, expected %d",
		      ov[0], ov[1], overlap);
out:
	mtcp_set_uctx(mctx, s, NULL);
	free(f);
}

static int is_stopped(const char *name)
{
	long i;
	for (i = 0; i < stopped_n; i++)
		if (strcmp(stopped[i], name) == 0)
			return 1;
	return 0;
}

static void on_s(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	char cli[80], svr[80], name[170];
	int both = MOS_SIDE_BOTH;
	(void)side, (void)arg;
	if (peer_names(mctx, s, cli, svr, sizeof cli) != 0) {
		FAIL("getpeername on S: errno %s", errname(errno));
		return;
	}
	snprintf(name, sizeof name, "%s %s", cli, svr);
	if (is_stopped(name)) {
		after_stop++;
		FAIL("event %#llx of %s after MOS_STOP_MON", (unsigned long long)event, name);
		return;
	}
	if (event != MOS_ON_CONN_NEW_DATA)
		return;
	if (mtcp_setsockopt(mctx, s, SOL_MONSOCKET, MOS_STOP_MON, &both, sizeof both) != 0) {
		FAIL("MOS_STOP_MON: errno %s", errname(errno));
		return;
	}
	if (stopped_n < MAX_STOPPED)
		memcpy(stopped[stopped_n++], name, sizeof name);
}

int main(int argc, char **argv)
{
	struct mtcp_conf conf;
	mctx_t ctx;
	int zero = 0, other, v = -1, sock_z;
	socklen_t len;
	setup_output();
	if (argc != 2) {
		fprintf(stderr, "usage: t_sockopt OVERLAP\n");
		return 2;
	}
	overlap = atoi(argv[1]);
	if (mtcp_init(NULL) != 0) {
		FAIL("mtcp_init: errno %s", errname(errno));
		return finish();
	}
	ctx = mtcp_create_context(0);
	if (ctx == NULL) {
		FAIL("mtcp_create_context(0): errno %s", errname(errno));
		return finish();
	}
	sock_m = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	sock_s = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	sock_z = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	CHECK(sock_m >= 0 && sock_s >= 0 && sock_z >= 0, "mtcp_socket: errno %s", errname(errno));

	/* As mOS programs that do not read the streams set them up (on another socket: 0 turns
	 * the socket's buffers off, which t_peek checks). */
	CHECK(mtcp_getconf(&conf) == 0, "mtcp_getconf: errno %s", errname(errno));
	CHECK(get_int(ctx, sock_m, MOS_CLIBUF, &v) == 0 && v == conf.rcvbuf_size,
	      "MOS_CLIBUF reads %d (errno %s), rcvbuf_size is %d", v, errname(errno),
	      conf.rcvbuf_size);
	CHECK(mtcp_setsockopt(ctx, sock_z, SOL_MONSOCKET, MOS_CLIBUF, &zero, sizeof zero) == 0,
	      "MOS_CLIBUF 0: errno %s", errname(errno));
	CHECK(mtcp_setsockopt(ctx, sock_z, SOL_MONSOCKET, MOS_SVRBUF, &zero, sizeof zero) == 0,
	      "MOS_SVRBUF 0: errno %s", errname(errno));
	CHECK(get_int(ctx, sock_z, MOS_CLIBUF, &v) == 0 && v == 0, "MOS_CLIBUF reads %d after 0",
	      v);
	CHECK(get_int(ctx, sock_z, MOS_SVRBUF, &v) == 0 && v == 0, "MOS_SVRBUF reads %d after 0",
	      v);
	CHECK(get_int(ctx, sock_m, MOS_SVRBUF, &v) == 0 && v == conf.rcvbuf_size,
	      "MOS_SVRBUF of another socket reads %d", v);
	printf("clibuf_zero ok\n");
	CHECK(mtcp_setsockopt(ctx, sock_m, SOL_MONSOCKET, MOS_CLIOVERLAP, &overlap, sizeof overlap) ==
		      0,
	      "MOS_CLIOVERLAP %d (the sensor's): errno %s", overlap, errname(errno));
	CHECK(mtcp_setsockopt(ctx, sock_m, SOL_MONSOCKET, MOS_SVROVERLAP, &overlap, sizeof overlap) ==
		      0,
	      "MOS_SVROVERLAP %d (the sensor's): errno %s", overlap, errname(errno));
	other = overlap == MOS_OVERLAP_POLICY_FIRST ? MOS_OVERLAP_POLICY_LAST
						    : MOS_OVERLAP_POLICY_FIRST;
	EXPECT_ERRNO("setsockopt_other_overlap",
		     mtcp_setsockopt(ctx, sock_m, SOL_MONSOCKET, MOS_CLIOVERLAP, &other, sizeof other),
		     -1, EINVAL);
	EXPECT_ERRNO("setsockopt_unknown_overlap",
		     mtcp_setsockopt(ctx, sock_m, SOL_MONSOCKET, MOS_SVROVERLAP, &(int){77},
				     sizeof(int)),
		     -1, EINVAL);
	len = sizeof v;
	EXPECT_ERRNO("getsockopt_bad_id_setup",
		     mtcp_getsockopt(ctx, 5000, SOL_MONSOCKET, MOS_CLIOVERLAP, &v, &len), -1, EBADF);
	EXPECT_ERRNO("setsockopt_bad_id_setup",
		     mtcp_setsockopt(ctx, 5000, SOL_MONSOCKET, MOS_CLIBUF, &zero, sizeof zero), -1,
		     EBADF);

	CHECK(mtcp_register_callback(ctx, sock_m, MOS_ON_TCP_STATE_CHANGE, MOS_HK_RCV, on_change) ==
		      0,
	      "register STATE_CHANGE rcv: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_m, MOS_ON_TCP_STATE_CHANGE, MOS_HK_SND, on_change) ==
		      0,
	      "register STATE_CHANGE snd: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_m, MOS_ON_PKT_IN, MOS_HK_RCV, on_pkt) == 0,
	      "register PKT_IN: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_m, MOS_ON_CONN_END, MOS_NULL, on_end) == 0,
	      "register CONN_END: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_s, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_s) == 0,
	      "register S NEW_DATA: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_s, MOS_ON_TCP_STATE_CHANGE, MOS_HK_RCV, on_s) == 0,
	      "register S STATE_CHANGE: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_s, MOS_ON_CONN_END, MOS_NULL, on_s) == 0,
	      "register S CONN_END: errno %s", errname(errno));

	mtcp_app_join(ctx);

	printf("counts frag_lists=%ld frags_read=%ld\n", frag_lists, frags_read);
	printf("stopped conns=%ld after=%ld\n", stopped_n, after_stop);
	CHECK(errors_checked == 1, "the errors were checked %ld times", errors_checked);
	CHECK(frag_lists > 0, "MOS_FRAGINFO was never read");
	mtcp_destroy_context(ctx);
	mtcp_destroy();
	return finish();
}
