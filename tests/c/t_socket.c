/*
 * t_socket: monitoring sockets (mtcp_socket, mtcp_close, mtcp_bind_monitor_filter,
 * mtcp_register_callback, including a NULL callback that unregisters).
 *
 *   t_socket SYN_FILTER RAW_FILTER
 *
 * Checks every errno the pages give for these calls, then watches the replay with:
 *   socket A  CONN_END registered, then unregistered with a NULL callback: never called
 *   socket B  CONN_END, no filter: prints `all client=A server=B` per connection
 *   socket C  CONN_END registered, then the socket closed: never called
 *   socket F  CONN_END, SYN filter SYN_FILTER: prints `filtered client=A server=B`
 *   socket R  raw, filter RAW_FILTER, MOS_ON_ORPHAN at MOS_NULL: counts packets (`raw
 *             packets=N`)
 * Socket B's first CONN_NEW_DATA hands its per-flow socket to a second thread, which gives it
 * to mtcp_bind_monitor_filter (ENOPROTOOPT: not a monitoring socket) while the connection
 * goes on (the test replays slowly enough) and reads its addresses from outside callbacks.
 * and prints `errno LABEL NAME ok` per error checked, `FAIL ...`, `done failures=N`.
 */
#include "check.h"

#include <pthread.h>
#include <time.h>

#define MAX_SOCKS 32

static int sock_a, sock_b, sock_c, sock_f, sock_r;
static int calls_a, calls_c, bad_side, bad_sock;
static long raw_packets;

static void on_a(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)sock, (void)side, (void)event, (void)arg;
	calls_a++;
}

static void on_c(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)sock, (void)side, (void)event, (void)arg;
	calls_c++;
}

static void print_conn(const char *tag, mctx_t mctx, int sock, int side)
{
	char cli[80], svr[80];
	if (side != MOS_SIDE_SVR)
		return;
	if (peer_names(mctx, sock, cli, svr, sizeof cli) != 0) {
		FAIL("getpeername in %s's CONN_END: errno %s", tag, errname(errno));
		return;
	}
	printf("%s client=%s server=%s\n", tag, cli, svr);
}

static void on_b(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)arg;
	CHECK(event == MOS_ON_CONN_END, "on_b for event %#llx", (unsigned long long)event);
	if (side != MOS_SIDE_CLI && side != MOS_SIDE_SVR)
		bad_side++;
	if (sock < MAX_SOCKS)
		bad_sock++;
	print_conn("all", mctx, sock, side);
}

/* The per-flow socket handed to the helper thread, with its addresses. */
static volatile int handed = -1;
static char handed_cli[80], handed_svr[80];
static volatile int helper_done, joined;

static void on_b_data(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)side, (void)event, (void)arg;
	if (handed != -1)
		return;
	if (peer_names(mctx, sock, handed_cli, handed_svr, sizeof handed_cli) != 0) {
		FAIL("getpeername in CONN_NEW_DATA: errno %s", errname(errno));
		return;
	}
	__sync_synchronize();
	handed = sock;
}

static void *helper(void *p)
{
	mctx_t ctx = (mctx_t)p;
	union monitor_filter ft;
	struct timespec ms = {0, 1000000};
	char cli[80], svr[80];
	int id;
	while (handed == -1 && !joined)
		nanosleep(&ms, NULL);
	__sync_synchronize();
	id = handed;
	if (id == -1) {
		FAIL("no connection's data came to socket B");
		return NULL;
	}
	memset(&ft, 0, sizeof ft);
	ft.stream_syn_filter = (char *)"tcp";
	EXPECT_ERRNO("bind_per_flow_socket", mtcp_bind_monitor_filter(ctx, id, &ft), -1,
		     ENOPROTOOPT);
	/* A per-flow socket names its connection from outside callbacks too. */
	if (peer_names(ctx, id, cli, svr, sizeof cli) != 0)
		FAIL("getpeername(%d) outside callbacks: errno %s", id, errname(errno));
	else
		CHECK(strcmp(cli, handed_cli) == 0 && strcmp(svr, handed_svr) == 0,
		      "per-flow socket %d names %s %s outside callbacks, %s %s inside", id, cli, svr,
		      handed_cli, handed_svr);
	helper_done = 1;
	return NULL;
}

static void on_f(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)event, (void)arg;
	print_conn("filtered", mctx, sock, side);
}

static void on_raw(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)arg;
	CHECK(sock == sock_r, "a raw packet on socket %d, not the raw socket %d", sock, sock_r);
	CHECK(side == MOS_NULL, "a raw packet with side %d, not MOS_NULL", side);
	CHECK(event == MOS_ON_ORPHAN, "a raw packet as event %#llx", (unsigned long long)event);
	raw_packets++;
}

/* Every socket a context can have: 32, distinct, below 32; the 33rd fails with ENFILE. */
static void pool(mctx_t ctx)
{
	int ids[MAX_SOCKS + 1], n, i, j, again;
	for (n = 0; n < MAX_SOCKS; n++) {
		/* Stream and raw sockets come from the same pool. */
		int type = n % 4 == 3 ? MOS_SOCK_MONITOR_RAW : MOS_SOCK_MONITOR_STREAM;
		ids[n] = mtcp_socket(ctx, AF_INET, type, 0);
		if (ids[n] < 0) {
			FAIL("socket %d of %d: errno %s", n + 1, MAX_SOCKS, errname(errno));
			break;
		}
		CHECK(ids[n] < MAX_SOCKS, "monitoring socket id %d is not below %d", ids[n],
		      MAX_SOCKS);
		for (j = 0; j < n; j++)
			CHECK(ids[j] != ids[n], "socket id %d given twice", ids[n]);
	}
	EXPECT_ERRNO("socket_pool_full", mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0), -1,
		     ENFILE);
	EXPECT_ERRNO("socket_pool_full_raw", mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_RAW, 0),
		     -1, ENFILE);
	/* A closed id comes back. */
	if (n > 0) {
		CHECK(mtcp_close(ctx, ids[0]) == 0, "close: errno %s", errname(errno));
		again = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
		CHECK(again >= 0, "no socket after a close: errno %s", errname(errno));
		ids[0] = again;
	}
	for (i = 0; i < n; i++)
		if (ids[i] >= 0)
			CHECK(mtcp_close(ctx, ids[i]) == 0, "close(%d): errno %s", ids[i],
			      errname(errno));
	printf("pool sockets=%d\n", n);
}

int main(int argc, char **argv)
{
	union monitor_filter ft;
	pthread_t thread;
	mctx_t ctx;
	int s, raw, closed;
	const char *syn_filter, *raw_filter;

	setup_output();
	if (argc != 3) {
		fprintf(stderr, "usage: t_socket SYN_FILTER RAW_FILTER\n");
		return 2;
	}
	syn_filter = argv[1];
	raw_filter = argv[2];
	if (mtcp_init(NULL) != 0) {
		FAIL("mtcp_init: errno %s", errname(errno));
		return finish();
	}
	ctx = mtcp_create_context(0);
	if (ctx == NULL) {
		FAIL("mtcp_create_context(0): errno %s", errname(errno));
		return finish();
	}

	/* mtcp_socket */
	EXPECT_ERRNO("socket_null_mctx", mtcp_socket(NULL, AF_INET, MOS_SOCK_MONITOR_STREAM, 0), -1,
		     EACCES);
	EXPECT_ERRNO("socket_af_unix", mtcp_socket(ctx, AF_UNIX, MOS_SOCK_MONITOR_STREAM, 0), -1,
		     EAFNOSUPPORT);
	EXPECT_ERRNO("socket_type_99", mtcp_socket(ctx, AF_INET, 99, 0), -1, EINVAL);
	EXPECT_ERRNO("socket_type_negative", mtcp_socket(ctx, AF_INET, -1, 0), -1, EINVAL);
	EXPECT_ERRNO("socket_type_unused", mtcp_socket(ctx, AF_INET, MOS_SOCK_UNUSED, 0), -1,
		     EINVAL);
	/* mOS's endpoint (mTCP) sockets: a passive monitor has none. */
	EXPECT_ERRNO("socket_type_stream", mtcp_socket(ctx, AF_INET, MOS_SOCK_STREAM, 0), -1,
		     EINVAL);
	pool(ctx);

	/* mtcp_close */
	closed = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	CHECK(closed >= 0, "socket: errno %s", errname(errno));
	CHECK(mtcp_close(ctx, closed) == 0, "close: errno %s", errname(errno));
	EXPECT_ERRNO("close_twice", mtcp_close(ctx, closed), -1, EBADF);
	EXPECT_ERRNO("close_bad_id", mtcp_close(ctx, 5000), -1, EBADF);
	EXPECT_ERRNO("close_negative", mtcp_close(ctx, -1), -1, EBADF);
	/* The closed id, before a new socket takes it again. */
	memset(&ft, 0, sizeof ft);
	ft.stream_syn_filter = (char *)"tcp port 80";
	EXPECT_ERRNO("bind_closed", mtcp_bind_monitor_filter(ctx, closed, &ft), -1, EBADF);
	EXPECT_ERRNO("register_closed",
		     mtcp_register_callback(ctx, closed, MOS_ON_CONN_END, MOS_NULL, on_a), -1,
		     EINVAL);

	/* mtcp_bind_monitor_filter */
	s = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	raw = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_RAW, 0);
	CHECK(s >= 0 && raw >= 0, "sockets: errno %s", errname(errno));
	memset(&ft, 0, sizeof ft);
	ft.stream_syn_filter = (char *)"tcp port 80";
	EXPECT_ERRNO("bind_null_mctx", mtcp_bind_monitor_filter(NULL, s, &ft), -1, EACCES);
	EXPECT_ERRNO("bind_bad_id", mtcp_bind_monitor_filter(ctx, 5000, &ft), -1, EBADF);
	EXPECT_ERRNO("bind_negative_id", mtcp_bind_monitor_filter(ctx, -1, &ft), -1, EBADF);
	ft.stream_syn_filter = (char *)"tcp port";
	EXPECT_ERRNO("bind_bad_syn_expr", mtcp_bind_monitor_filter(ctx, s, &ft), -1, EINVAL);
	memset(&ft, 0, sizeof ft);
	ft.stream_orphan_filter = (char *)"this is ( not bpf";
	EXPECT_ERRNO("bind_bad_orphan_expr", mtcp_bind_monitor_filter(ctx, s, &ft), -1, EINVAL);
	memset(&ft, 0, sizeof ft);
	ft.raw_pkt_filter = (char *)"udp and";
	EXPECT_ERRNO("bind_bad_raw_expr", mtcp_bind_monitor_filter(ctx, raw, &ft), -1, EINVAL);
	/* A NULL filter is not an error. */
	CHECK(mtcp_bind_monitor_filter(ctx, s, NULL) == 0, "bind NULL filter: errno %s",
	      errname(errno));
	CHECK(mtcp_bind_monitor_filter(ctx, raw, NULL) == 0, "bind NULL raw filter: errno %s",
	      errname(errno));
	CHECK(mtcp_close(ctx, s) == 0 && mtcp_close(ctx, raw) == 0, "close: errno %s",
	      errname(errno));

	/* mtcp_register_callback: EINVAL for a socket that is not a monitoring socket. */
	EXPECT_ERRNO("register_bad_id",
		     mtcp_register_callback(ctx, 5000, MOS_ON_CONN_END, MOS_NULL, on_a), -1,
		     EINVAL);
	EXPECT_ERRNO("register_negative_id",
		     mtcp_register_callback(ctx, -1, MOS_ON_CONN_END, MOS_NULL, on_a), -1, EINVAL);

	/* The sockets that watch the replay. */
	sock_a = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	sock_b = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	sock_c = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	sock_f = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	sock_r = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_RAW, 0);
	CHECK(sock_a >= 0 && sock_b >= 0 && sock_c >= 0 && sock_f >= 0 && sock_r >= 0,
	      "sockets: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_a, MOS_ON_CONN_END, MOS_NULL, on_a) == 0,
	      "register A: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_a, MOS_ON_CONN_END, MOS_NULL, NULL) == 0,
	      "unregister A: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_b, MOS_ON_CONN_END, MOS_NULL, on_b) == 0,
	      "register B: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_b, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_b_data) == 0,
	      "register B data: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_c, MOS_ON_CONN_END, MOS_NULL, on_c) == 0,
	      "register C: errno %s", errname(errno));
	CHECK(mtcp_close(ctx, sock_c) == 0, "close C: errno %s", errname(errno));
	memset(&ft, 0, sizeof ft);
	ft.stream_syn_filter = (char *)syn_filter;
	CHECK(mtcp_bind_monitor_filter(ctx, sock_f, &ft) == 0, "bind F (%s): errno %s", syn_filter,
	      errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_f, MOS_ON_CONN_END, MOS_NULL, on_f) == 0,
	      "register F: errno %s", errname(errno));
	memset(&ft, 0, sizeof ft);
	ft.raw_pkt_filter = (char *)raw_filter;
	CHECK(mtcp_bind_monitor_filter(ctx, sock_r, &ft) == 0, "bind R (%s): errno %s", raw_filter,
	      errname(errno));
	CHECK(mtcp_register_callback(ctx, sock_r, MOS_ON_ORPHAN, MOS_NULL, on_raw) == 0,
	      "register R: errno %s", errname(errno));

	if (pthread_create(&thread, NULL, helper, ctx) != 0) {
		FAIL("pthread_create");
		return finish();
	}
	mtcp_app_join(ctx);
	joined = 1;
	pthread_join(thread, NULL);
	CHECK(helper_done, "the helper thread did not finish its checks");

	printf("raw packets=%ld\n", raw_packets);
	printf("unregistered calls=%d closed calls=%d\n", calls_a, calls_c);
	CHECK(calls_a == 0, "the unregistered callback was called %d times", calls_a);
	CHECK(calls_c == 0, "the closed socket's callback was called %d times", calls_c);
	CHECK(bad_side == 0, "%d CONN_END callbacks without a side", bad_side);
	CHECK(bad_sock == 0, "%d CONN_END callbacks given a monitoring socket id", bad_sock);
	mtcp_destroy_context(ctx);
	mtcp_destroy();
	return finish();
}
