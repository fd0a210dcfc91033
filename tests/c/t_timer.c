/*
 * t_timer: timers (mtcp_settimer, mtcp_cb_get_ts) and per-flow user contexts (mtcp_set_uctx,
 * mtcp_get_uctx).
 *
 *   t_timer capture DELAY_MS   run with MOS_TIMER_CLOCK=capture: on each MOS_ON_CONN_START
 *                              (MOS_HK_SND) a timer DELAY_MS of capture time later:
 *                              `timer_set id=N at=US` and, when it fires, `timer_fired id=N
 *                              at=US` (mtcp_cb_get_ts, capture microseconds, wrapping)
 *   t_timer wall               wall clock: a timer of 200 ms set before mtcp_app_join, which
 *                              re-arms itself twice from its callback (`wall_fired n=N`)
 *
 * Both modes keep a record per connection with mtcp_set_uctx on two sockets and check with
 * mtcp_get_uctx that every later event of the connection finds its own socket's record.
 * Prints `errno` lines, `uctx conns=N`, `FAIL ...` and `done failures=N`.
 */
#include "check.h"

#include <time.h>

#define MAGIC 0x75637478u

struct rec {
	unsigned magic;
	int sock;     /* the monitoring socket it belongs to */
	int flow;     /* the per-flow socket */
	char names[170];
	int ends;
};

static int sock1, sock2, capture_mode;
static long delay_ms, timers_set, timers_fired, uctx_checks, uctx_conns, errors_checked;
static unsigned char fired_once[1 << 16];
static uint32_t set_at[1 << 16];
static int wall_fired;
static struct timespec wall_start;

static int names_of(mctx_t mctx, int s, char *out, size_t len)
{
	char cli[80], svr[80];
	if (peer_names(mctx, s, cli, svr, sizeof cli) != 0)
		return -1;
	snprintf(out, len, "%s %s", cli, svr);
	return 0;
}

static void on_timer(mctx_t mctx, int id, int side, event_t event, filter_arg_t *arg)
{
	uint32_t now = mtcp_cb_get_ts(mctx);
	(void)side;
	CHECK(event == MOS_ON_TIMEOUT, "a timer's callback for event %#llx",
	      (unsigned long long)event);
	CHECK(arg == NULL || (arg->arg == NULL && arg->len == 0), "a timer got a filter argument");
	if (id < 0 || id >= (int)sizeof fired_once) {
		FAIL("a timer fired with id %d", id);
		return;
	}
	CHECK(fired_once[id] == 0, "timer %d fired twice", id);
	fired_once[id] = 1;
	timers_fired++;
	/* Never before its time, on the clock it was set on. */
	CHECK((uint32_t)(now - set_at[id]) >= (uint32_t)delay_ms * 1000u,
	      "timer %d fired %u us after it was set, asked %ld ms", id,
	      (unsigned)(now - set_at[id]), delay_ms);
	printf("timer_fired id=%d at=%u\n", id, (unsigned)now);
}

static double since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void on_wall(mctx_t mctx, int id, int side, event_t event, filter_arg_t *arg)
{
	struct timeval tv = {0, 200000};
	double el = since(&wall_start);
	(void)side, (void)arg;
	CHECK(event == MOS_ON_TIMEOUT, "the wall timer's event %#llx", (unsigned long long)event);
	CHECK(id == 100 + wall_fired, "wall timer id %d, expected %d", id, 100 + wall_fired);
	wall_fired++;
	CHECK(el >= 0.2 * wall_fired - 0.001, "wall timer %d fired %.3f s after the start",
	      wall_fired, el);
	printf("wall_fired n=%d after=%.3f\n", wall_fired, el);
	/* Re-armed from its own callback. */
	if (wall_fired < 3 && mtcp_settimer(mctx, 100 + wall_fired, &tv, on_wall) != 0)
		FAIL("settimer from a timer's callback: errno %s", errname(errno));
}

static void check_errors(mctx_t mctx, int s)
{
	struct timeval tv = {1, 0}, bad = {0, 2000000};
	EXPECT_NULL_ERRNO("get_uctx_null_mctx", mtcp_get_uctx(NULL, s), EACCES);
	EXPECT_NULL_ERRNO("get_uctx_bad_id", mtcp_get_uctx(mctx, 1 << 30), EBADF);
	EXPECT_NULL_ERRNO("get_uctx_negative_id", mtcp_get_uctx(mctx, -1), EBADF);
	EXPECT_NULL_ERRNO("get_uctx_monitoring_socket", mtcp_get_uctx(mctx, sock1), EBADF);
	EXPECT_ERRNO("set_uctx_null_mctx", mtcp_set_uctx(NULL, s, &tv), -1, EACCES);
	EXPECT_ERRNO("set_uctx_bad_id", mtcp_set_uctx(mctx, 1 << 30, &tv), -1, EBADF);
	/* mtcp_settimer: -1 on failure (the page gives no errno). */
	CHECK(mtcp_settimer(mctx, 1, &tv, NULL) == -1, "settimer without a callback");
	CHECK(mtcp_settimer(mctx, 1, NULL, on_timer) == -1, "settimer without a timeout");
	CHECK(mtcp_settimer(mctx, 1, &bad, on_timer) == -1, "settimer with tv_usec 2000000");
	CHECK(mtcp_settimer(NULL, 1, &tv, on_timer) == -1, "settimer without a context");
	printf("settimer_invalid ok\n");
	errors_checked++;
}

/* Every event of a connection on socket `own`: its record is there, and is this socket's. */
static void on_any(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct rec *r;
	char names[170];
	(void)side, (void)arg;
	if (errors_checked == 0)
		check_errors(mctx, s);
	if (names_of(mctx, s, names, sizeof names) != 0) {
		FAIL("getpeername: errno %s", errname(errno));
		return;
	}
	errno = 0;
	r = (struct rec *)mtcp_get_uctx(mctx, s);
	if (r == NULL) {
		CHECK(errno == 0, "get_uctx of a new connection: errno %s", errname(errno));
		r = (struct rec *)calloc(1, sizeof *r);
		if (r == NULL)
			return;
		r->magic = MAGIC;
		r->flow = s;
		memcpy(r->names, names, sizeof names);
		r->sock = -1;
		if (mtcp_set_uctx(mctx, s, r) != 0) {
			FAIL("set_uctx: errno %s", errname(errno));
			free(r);
			return;
		}
		uctx_conns++;
	}
	CHECK(r->magic == MAGIC, "get_uctx gave something else");
	CHECK(r->flow == s, "the record of per-flow socket %d came with %d", r->flow, s);
	CHECK(strcmp(r->names, names) == 0, "the record of %s came with %s", r->names, names);
	uctx_checks++;
	if (event == MOS_ON_CONN_END && ++r->ends == 2) {
		CHECK(mtcp_set_uctx(mctx, s, NULL) == 0, "set_uctx(NULL): errno %s", errname(errno));
		CHECK(mtcp_get_uctx(mctx, s) == NULL, "get_uctx after set_uctx(NULL)");
		free(r);
	}
}

static void on_any1(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct rec *r;
	on_any(mctx, s, side, event, arg);
	r = (struct rec *)mtcp_get_uctx(mctx, s);
	if (r != NULL) {
		CHECK(r->sock == -1 || r->sock == sock1, "socket 1's record belongs to socket %d",
		      r->sock);
		r->sock = sock1;
	}
}

static void on_any2(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct rec *r;
	on_any(mctx, s, side, event, arg);
	r = (struct rec *)mtcp_get_uctx(mctx, s);
	if (r != NULL) {
		CHECK(r->sock == -1 || r->sock == sock2, "socket 2's record belongs to socket %d",
		      r->sock);
		r->sock = sock2;
	}
}

static void on_start(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct timeval tv;
	int id;
	on_any1(mctx, s, side, event, arg);
	if (!capture_mode)
		return;
	id = (int)timers_set;
	if (id >= (int)sizeof fired_once) {
		FAIL("too many connections");
		return;
	}
	tv.tv_sec = delay_ms / 1000;
	tv.tv_usec = (delay_ms % 1000) * 1000;
	set_at[id] = mtcp_cb_get_ts(mctx);
	if (mtcp_settimer(mctx, id, &tv, on_timer) != 0) {
		FAIL("settimer in a callback: errno %s", errname(errno));
		return;
	}
	timers_set++;
	printf("timer_set id=%d at=%u\n", id, (unsigned)set_at[id]);
}

int main(int argc, char **argv)
{
	mctx_t ctx;
	setup_output();
	if (argc == 3 && strcmp(argv[1], "capture") == 0) {
		capture_mode = 1;
		delay_ms = atol(argv[2]);
	} else if (!(argc == 2 && strcmp(argv[1], "wall") == 0)) {
		fprintf(stderr, "usage: t_timer capture DELAY_MS | wall\n");
		return 2;
	}
	if (mtcp_init(NULL) != 0) {
		FAIL("mtcp_init: errno %s", errname(errno));
		return finish();
	}
	ctx = mtcp_create_context(0);
	if (ctx == NULL) {
		FAIL("mtcp_create_context(0): errno %s", errname(errno));
		return finish();
	}
	sock1 = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	sock2 = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	CHECK(sock1 >= 0 && sock2 >= 0, "mtcp_socket: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock1, MOS_ON_CONN_START, MOS_HK_SND, on_start) == 0,
	      "register CONN_START: errno %s", errname(errno));
	/* Each event bit on its own registration (the page registers one event at a time). */
	CHECK(mtcp_register_callback(ctx, sock1, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_any1) == 0 &&
		      mtcp_register_callback(ctx, sock1, MOS_ON_TCP_STATE_CHANGE, MOS_HK_RCV,
					     on_any1) == 0 &&
		      mtcp_register_callback(ctx, sock1, MOS_ON_CONN_END, MOS_NULL, on_any1) == 0,
	      "register on socket 1: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock2, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_any2) == 0 &&
		      mtcp_register_callback(ctx, sock2, MOS_ON_TCP_STATE_CHANGE, MOS_HK_SND,
					     on_any2) == 0 &&
		      mtcp_register_callback(ctx, sock2, MOS_ON_CONN_END, MOS_NULL, on_any2) == 0,
	      "register on socket 2: errno %s", errname(errno));
	if (!capture_mode) {
		struct timeval tv = {0, 200000};
		delay_ms = 200;
		clock_gettime(CLOCK_MONOTONIC, &wall_start);
		CHECK(mtcp_settimer(ctx, 100, &tv, on_wall) == 0, "settimer: errno %s",
		      errname(errno));
	}
	mtcp_app_join(ctx);
	printf("uctx conns=%ld checks=%ld\n", uctx_conns, uctx_checks);
	printf("timers set=%ld fired=%ld\n", timers_set, timers_fired);
	CHECK(errors_checked == 1, "the errors were checked %ld times", errors_checked);
	CHECK(uctx_checks > uctx_conns, "too few uctx checks");
	if (!capture_mode)
		CHECK(wall_fired == 3, "the wall timer fired %d times of 3", wall_fired);
	mtcp_destroy_context(ctx);
	mtcp_destroy();
	return finish();
}
