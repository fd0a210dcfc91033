/*
 * t_events: user-defined events (mtcp_define_event, mtcp_alloc_event, mtcp_raise_event) and
 * callbacks on them.
 *
 *   t_events
 *
 * On one stream socket:
 *   base      MOS_ON_CONN_NEW_DATA: counts events per side; raises child2 every time
 *   ude_svr   defined on CONN_NEW_DATA, filter "side is the server's" with an argument;
 *             its callback reads the new client-to-server bytes with mtcp_peek
 *   ude_never defined on CONN_NEW_DATA, filter always false
 *   ude_chain defined on ude_svr, filter always true
 *   child     allocated on CONN_NEW_DATA, raised by ude_svr's filter on the client's side
 *   child2    allocated on CONN_NEW_DATA, raised by base's callback
 * Then allocates events until mtcp_alloc_event has no more to give (MOS_NULL_EVENT).
 * Prints per connection `ude client=A server=B c2s_bytes=N` (bytes read in ude_svr's
 * callbacks), the counts as `counts ...`, `errno` lines, `FAIL ...` and `done failures=N`.
 */
#include "check.h"

struct my_arg {
	int magic;
	char tag[8];
};

static struct my_arg arg_svr = {0x5eed, "svr"};
static struct my_arg arg_chain = {0xc4a1, "chain"};
static event_t ude_svr, ude_never, ude_chain, child, child2;
static int sock;

static long base[2], filter_calls[2], svr_fired, never_fired, chain_fired, child_fired,
	child2_fired, raised_ok[2];

struct flow {
	uint64_t c2s;
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

static bool f_is_svr(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	/* The event a filter gets: the page does not say (the base event or the one defined). */
	(void)event;
	CHECK(s >= 32, "a filter given socket %d", s);
	CHECK(arg != NULL && arg->arg == &arg_svr && arg->len == sizeof arg_svr &&
		      ((struct my_arg *)arg->arg)->magic == 0x5eed,
	      "ude_svr's filter got another argument");
	if (side == MOS_SIDE_SVR || side == MOS_SIDE_CLI)
		filter_calls[side]++;
	if (side == MOS_SIDE_CLI) {
		if (mtcp_raise_event(mctx, child) == 0)
			raised_ok[0]++;
		else
			FAIL("raise child in a filter: errno %s", errname(errno));
	}
	return side == MOS_SIDE_SVR;
}

static bool f_false(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)s, (void)side, (void)event, (void)arg;
	return false;
}

static bool f_true(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)s, (void)side, (void)event;
	CHECK(arg != NULL && arg->arg == &arg_chain && arg->len == sizeof arg_chain,
	      "ude_chain's filter got another argument");
	return true;
}

static void on_base(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	(void)arg;
	CHECK(event == MOS_ON_CONN_NEW_DATA, "on_base for %#llx", (unsigned long long)event);
	if (side != MOS_SIDE_CLI && side != MOS_SIDE_SVR) {
		FAIL("CONN_NEW_DATA with side %d", side);
		return;
	}
	CHECK(s >= 32, "on_base given socket %d", s);
	base[side]++;
	if (mtcp_raise_event(mctx, child2) == 0)
		raised_ok[1]++;
	else
		FAIL("raise child2 in a callback: errno %s", errname(errno));
	/* Only events mtcp_alloc_event made may be raised. */
	if (base[0] + base[1] == 1) {
		CHECK(mtcp_raise_event(mctx, ude_svr) == -1, "raised a defined event");
		CHECK(mtcp_raise_event(mctx, MOS_ON_CONN_START) == -1, "raised a built-in event");
		CHECK(mtcp_raise_event(mctx, child | child2) == -1, "raised two events at once");
		CHECK(mtcp_raise_event(mctx, MOS_NULL_EVENT) == -1, "raised MOS_NULL_EVENT");
		printf("raise_nonallocated ok\n");
	}
}

static void on_svr(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	char buf[8192];
	struct flow *f;
	ssize_t n;
	CHECK(event == ude_svr, "on_svr for %#llx", (unsigned long long)event);
	CHECK(side == MOS_SIDE_SVR, "ude_svr fired on side %d", side);
	CHECK(arg != NULL && arg->arg == &arg_svr && arg->len == sizeof arg_svr,
	      "ude_svr's callback got another argument");
	svr_fired++;
	f = flow_of(mctx, s);
	if (f == NULL)
		return;
	for (;;) {
		errno = 0;
		n = mtcp_peek(mctx, s, MOS_SIDE_SVR, buf, sizeof buf);
		if (n > 0) {
			f->c2s += (uint64_t)n;
		} else if (n == -1 && errno == ENODATA) {
			break;
		} else if (n < -1 && errno == ENODATA) {
			f->c2s += (uint64_t)-n; /* lost bytes, counted as the dump counts them */
		} else {
			FAIL("peek in ude_svr's callback: %ld errno %s", (long)n, errname(errno));
			break;
		}
	}
}

static void on_never(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)s, (void)side, (void)event, (void)arg;
	never_fired++;
}

static void on_chain(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)s, (void)arg;
	CHECK(event == ude_chain, "on_chain for %#llx", (unsigned long long)event);
	CHECK(side == MOS_SIDE_SVR, "ude_chain fired on side %d", side);
	chain_fired++;
}

static void on_child(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)s, (void)arg;
	CHECK(event == child, "on_child for %#llx", (unsigned long long)event);
	CHECK(side == MOS_SIDE_CLI, "child raised on the client's side fired on side %d", side);
	child_fired++;
}

static void on_child2(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)s, (void)side, (void)arg;
	CHECK(event == child2, "on_child2 for %#llx", (unsigned long long)event);
	child2_fired++;
}

static void on_end(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	char cli[80], svr[80];
	struct flow *f;
	(void)event, (void)arg;
	f = flow_of(mctx, s);
	if (f == NULL)
		return;
	if (++f->ends < 2)
		return;
	CHECK(side == MOS_SIDE_SVR, "the second CONN_END on side %d", side);
	if (peer_names(mctx, s, cli, svr, sizeof cli) != 0)
		FAIL("getpeername: errno %s", errname(errno));
	else
		printf("ude client=%s server=%s c2s_bytes=%llu\n", cli, svr,
		       (unsigned long long)f->c2s);
	mtcp_set_uctx(mctx, s, NULL);
	free(f);
}

static int distinct(event_t e)
{
	return e != MOS_NULL_EVENT && (e & 0x7ffULL) == 0;
}

int main(void)
{
	filter_arg_t fa_svr = {&arg_svr, sizeof arg_svr};
	filter_arg_t fa_chain = {&arg_chain, sizeof arg_chain};
	mctx_t ctx;
	event_t e;

	setup_output();
	if (mtcp_init(NULL) != 0) {
		FAIL("mtcp_init: errno %s", errname(errno));
		return finish();
	}
	ctx = mtcp_create_context(0);
	if (ctx == NULL) {
		FAIL("mtcp_create_context(0): errno %s", errname(errno));
		return finish();
	}
	sock = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	CHECK(sock >= 0, "mtcp_socket: errno %s", errname(errno));

	/* Failures: an undefined parent or base, no filter. */
	e = mtcp_alloc_event((event_t)1 << 60);
	CHECK(e == MOS_NULL_EVENT, "alloc_event of an undefined parent gave %#llx",
	      (unsigned long long)e);
	e = mtcp_alloc_event(MOS_NULL_EVENT);
	CHECK(e == MOS_NULL_EVENT, "alloc_event(MOS_NULL_EVENT) gave %#llx", (unsigned long long)e);
	e = mtcp_alloc_event(MOS_ON_CONN_START | MOS_ON_CONN_END);
	CHECK(e == MOS_NULL_EVENT, "alloc_event of two events gave %#llx", (unsigned long long)e);
	printf("alloc_event_undefined ok\n");
	e = mtcp_define_event((event_t)1 << 60, f_false, NULL);
	CHECK(e == MOS_NULL_EVENT, "define_event on an undefined base gave %#llx",
	      (unsigned long long)e);
	e = mtcp_define_event(MOS_ON_CONN_NEW_DATA, NULL, NULL);
	CHECK(e == MOS_NULL_EVENT, "define_event without a filter gave %#llx",
	      (unsigned long long)e);
	printf("define_event_invalid ok\n");
	EXPECT_ERRNO("register_undefined_event",
		     mtcp_register_callback(ctx, sock, (event_t)1 << 59, MOS_NULL, on_never), -1,
		     EINVAL);

	ude_svr = mtcp_define_event(MOS_ON_CONN_NEW_DATA, f_is_svr, &fa_svr);
	ude_never = mtcp_define_event(MOS_ON_CONN_NEW_DATA, f_false, NULL);
	ude_chain = mtcp_define_event(ude_svr, f_true, &fa_chain);
	child = mtcp_alloc_event(MOS_ON_CONN_NEW_DATA);
	child2 = mtcp_alloc_event(MOS_ON_CONN_NEW_DATA);
	printf("events ude_svr=%#llx ude_never=%#llx ude_chain=%#llx child=%#llx child2=%#llx\n",
	       (unsigned long long)ude_svr, (unsigned long long)ude_never,
	       (unsigned long long)ude_chain, (unsigned long long)child, (unsigned long long)child2);
	CHECK(distinct(ude_svr) && distinct(ude_never) && distinct(ude_chain) && distinct(child) &&
		      distinct(child2),
	      "a user-defined event is MOS_NULL_EVENT or a built-in bit");
	CHECK(ude_svr != ude_never && ude_svr != ude_chain && ude_never != ude_chain &&
		      child != child2 && child != ude_svr && child2 != ude_svr,
	      "two user-defined events share an id");
	/* A child of a user-defined event. */
	e = mtcp_alloc_event(ude_svr);
	CHECK(e != MOS_NULL_EVENT, "alloc_event on a user-defined parent failed");

	/* Outside any event's dispatch, even an allocated event cannot be raised. */
	printf("raise_outside ret=%d\n", mtcp_raise_event(ctx, child));

	CHECK(mtcp_register_callback(ctx, sock, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_base) == 0,
	      "register base: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock, ude_svr, MOS_NULL, on_svr) == 0,
	      "register ude_svr: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock, ude_never, MOS_NULL, on_never) == 0,
	      "register ude_never: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock, ude_chain, MOS_NULL, on_chain) == 0,
	      "register ude_chain: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock, child, MOS_NULL, on_child) == 0,
	      "register child: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock, child2, MOS_NULL, on_child2) == 0,
	      "register child2: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, sock, MOS_ON_CONN_END, MOS_NULL, on_end) == 0,
	      "register CONN_END: errno %s", errname(errno));

	/* Until there is no more event_t to give: MOS_NULL_EVENT (at most one per bit of the
	 * 64 of event_t above the built-in events). */
	{
		event_t seen = ude_svr | ude_never | ude_chain | child | child2 | e;
		int n;
		for (n = 0; n < 64; n++) {
			event_t x = mtcp_alloc_event(MOS_ON_CONN_START);
			if (x == MOS_NULL_EVENT)
				break;
			CHECK((x & (x - 1)) == 0 && (x & seen) == 0 && (x & 0x7ffULL) == 0,
			      "alloc_event gave %#llx, not a new bit", (unsigned long long)x);
			seen |= x;
		}
		CHECK(n < 64, "alloc_event never ran out");
		printf("alloc_event_exhausted after=%d ok\n", n);
	}

	mtcp_app_join(ctx);

	printf("counts base_cli=%ld base_svr=%ld filter_cli=%ld filter_svr=%ld svr=%ld never=%ld "
	       "chain=%ld child=%ld child2=%ld raised_child=%ld raised_child2=%ld\n",
	       base[0], base[1], filter_calls[0], filter_calls[1], svr_fired, never_fired,
	       chain_fired, child_fired, child2_fired, raised_ok[0], raised_ok[1]);
	CHECK(base[1] > 0 && base[0] > 0, "no CONN_NEW_DATA on one side");
	CHECK(filter_calls[0] == base[0] && filter_calls[1] == base[1],
	      "the filter ran %ld/%ld times for %ld/%ld base events", filter_calls[0],
	      filter_calls[1], base[0], base[1]);
	CHECK(svr_fired == base[1], "ude_svr fired %ld times for %ld server-side events", svr_fired,
	      base[1]);
	CHECK(never_fired == 0, "ude_never fired %ld times", never_fired);
	CHECK(chain_fired == svr_fired, "ude_chain fired %ld times, ude_svr %ld", chain_fired,
	      svr_fired);
	CHECK(child_fired == raised_ok[0] && child_fired == base[0],
	      "child fired %ld times, raised %ld, client-side events %ld", child_fired,
	      raised_ok[0], base[0]);
	CHECK(child2_fired == raised_ok[1] && child2_fired == base[0] + base[1],
	      "child2 fired %ld times, raised %ld, base events %ld", child2_fired, raised_ok[1],
	      base[0] + base[1]);
	mtcp_destroy_context(ctx);
	mtcp_destroy();
	return finish();
}
