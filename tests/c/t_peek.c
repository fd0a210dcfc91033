/*
 * t_peek: reading the streams (mtcp_peek, mtcp_ppeek).
 *
 *   t_peek            against a lossless replay: every byte is read
 *   t_peek overrun    2 ms late on every event, against a sensor that does not wait
 *                     (--lossy) and keeps little history: bytes are overwritten before they are
 *                     read, and peek returns -(bytes lost) with ENODATA, printed as
 *                     `lost client=A server=B side=S at=OFFSET n=N read_sha1=H` (H: the
 *                     SHA-1 of the side's bytes before OFFSET, earlier losses as zeros)
 *
 * On every MOS_ON_CONN_NEW_DATA (and at CONN_END), reads the side's new bytes with mtcp_peek,
 * in pieces of varying size, after checking that mtcp_ppeek at the read position gives the
 * same bytes without moving it. Prints per connection
 *   `flow client=A server=B c2s_bytes=N c2s_sha1=H c2s_lost=L s2c_bytes=N s2c_sha1=H s2c_lost=L`
 * (SHA-1 of what peek gave, lost bytes counted as zeros as the sensor's dump writes them), on
 * the first event the errno checks of both calls, `FAIL ...` and `done failures=N`. A second
 * socket, its buffers turned off with MOS_CLIBUF/MOS_SVRBUF 0, checks that both calls then
 * fail with EINVAL.
 */
#include "check.h"

#include <time.h>

static int mon_sock, off_sock, lagging;
static long events, ppeek_checks, errors_checked, off_checked, stale;

struct dir {
	struct sha1 sha;
	uint64_t bytes, lost;
};

struct flow {
	struct dir d[2]; /* indexed by side: MOS_SIDE_SVR's stream is what the client sent */
	int ends;
	int stale;
	unsigned turn;
};

static struct flow *flow_of(mctx_t mctx, int s)
{
	struct flow *f = (struct flow *)mtcp_get_uctx(mctx, s);
	if (f == NULL) {
		f = (struct flow *)calloc(1, sizeof *f);
		if (f == NULL || mtcp_set_uctx(mctx, s, f) != 0) {
			if (lagging && errno == EBADF)
				stale++; /* its slot went to another connection already */
			else
				FAIL("set_uctx: errno %s", errname(errno));
			free(f);
			return NULL;
		}
		sha1_init(&f->d[0].sha);
		sha1_init(&f->d[1].sha);
	}
	return f;
}

/* The errors of both calls, from inside a callback with per-flow socket s. */
static void check_errors(mctx_t mctx, int s, int side)
{
	char buf[64];
	/* Drain first, so that the next peek has nothing. */
	while (mtcp_peek(mctx, s, side, buf, sizeof buf) > 0)
		;
	EXPECT_ERRNO("peek_null_mctx", mtcp_peek(NULL, s, side, buf, sizeof buf), -1, EACCES);
	EXPECT_ERRNO("peek_bad_id", mtcp_peek(mctx, 1 << 30, side, buf, sizeof buf), -1, EBADF);
	EXPECT_ERRNO("peek_negative_id", mtcp_peek(mctx, -1, side, buf, sizeof buf), -1, EBADF);
	EXPECT_ERRNO("peek_monitoring_socket", mtcp_peek(mctx, mon_sock, side, buf, sizeof buf), -1,
		     ENOTSOCK);
	EXPECT_ERRNO("peek_drained", mtcp_peek(mctx, s, side, buf, sizeof buf), -1, ENODATA);
	EXPECT_ERRNO("ppeek_null_mctx", mtcp_ppeek(NULL, s, side, buf, sizeof buf, 0), -1, EACCES);
	EXPECT_ERRNO("ppeek_bad_id", mtcp_ppeek(mctx, 1 << 30, side, buf, sizeof buf, 0), -1,
		     EBADF);
	EXPECT_ERRNO("ppeek_monitoring_socket",
		     mtcp_ppeek(mctx, mon_sock, side, buf, sizeof buf, 0), -1, ESOCKTNOSUPPORT);
	EXPECT_ERRNO("ppeek_far_offset",
		     mtcp_ppeek(mctx, s, side, buf, sizeof buf, (uint64_t)1 << 40), -1, ENODATA);
	errors_checked++;
}

/* Reads side's new bytes into f. */
static void drain(mctx_t mctx, int s, int side, struct flow *f)
{
	static const size_t sizes[] = {1, 100, 1460, 4096, 65536};
	static char buf[65536], pbuf[65536];
	struct dir *d = &f->d[side];
	for (;;) {
		size_t want = sizes[f->turn++ % (sizeof sizes / sizeof sizes[0])];
		ssize_t p, n;
		/* ppeek at the read position: the same bytes, and the position stays. */
		errno = 0;
		p = mtcp_ppeek(mctx, s, side, pbuf, want, d->bytes);
		errno = 0;
		n = mtcp_peek(mctx, s, side, buf, want);
		if (n > 0) {
			if (p < n || memcmp(pbuf, buf, (size_t)n) != 0)
				FAIL("ppeek at %llu gave %ld bytes, peek %ld (or other bytes)",
				     (unsigned long long)d->bytes, (long)p, (long)n);
			ppeek_checks++;
			sha1_update(&d->sha, buf, (size_t)n);
			d->bytes += (uint64_t)n;
		} else if (n == -1 && errno == ENODATA) {
			return;
		} else if (n == -1 && errno == EBADF && lagging) {
			/* A sensor that does not wait gave the connection's slot to another one
			 * before this late reader came (a stale flow: EBADF, never others' bytes). */
			f->stale = 1;
			return;
		} else if (n < -1 && errno == ENODATA) {
			/* Bytes lost: counted as zeros, as the dump writes them. */
			char cli[80], svr[80], h[41];
			struct sha1 so_far = d->sha;
			sha1_hex(&so_far, h);
			if (peer_names(mctx, s, cli, svr, sizeof cli) == 0)
				printf("lost client=%s server=%s side=%d at=%llu n=%ld read_sha1=%s\n", cli,
				       svr, side, (unsigned long long)d->bytes, (long)-n, h);
			else if (errno == EBADF)
				f->stale = 1;
			else
				FAIL("getpeername: errno %s", errname(errno));
			sha1_zeros(&d->sha, (uint64_t)-n);
			d->bytes += (uint64_t)-n;
			d->lost += (uint64_t)-n;
		} else {
			FAIL("peek: %ld errno %s", (long)n, errname(errno));
			return;
		}
	}
}

static void on_data(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	struct flow *f;
	(void)arg;
	CHECK(event == MOS_ON_CONN_NEW_DATA, "on_data for %#llx", (unsigned long long)event);
	if (side != MOS_SIDE_CLI && side != MOS_SIDE_SVR) {
		FAIL("CONN_NEW_DATA with side %d", side);
		return;
	}
	f = flow_of(mctx, s);
	if (f == NULL)
		return;
	events++;
	if (lagging) {
		/* Fall behind a sensor that does not wait (--lossy): the bytes not read in time
		 * are overwritten, and peek says how many it lost. */
		struct timespec t = {0, 2000000};
		nanosleep(&t, NULL);
	}
	drain(mctx, s, side, f);
	if (errors_checked == 0 && !lagging)
		check_errors(mctx, s, side);
}

/* Socket Z's buffers were turned off (MOS_CLIBUF/MOS_SVRBUF 0): EINVAL. */
static void on_off(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	char buf[64];
	(void)event, (void)arg;
	if (off_checked++ > 0)
		return;
	EXPECT_ERRNO("peek_buffer_off", mtcp_peek(mctx, s, side, buf, sizeof buf), -1, EINVAL);
	EXPECT_ERRNO("ppeek_buffer_off", mtcp_ppeek(mctx, s, side, buf, sizeof buf, 0), -1, EINVAL);
}

static void on_end(mctx_t mctx, int s, int side, event_t event, filter_arg_t *arg)
{
	char cli[80], svr[80], h[2][41];
	struct flow *f;
	(void)event, (void)arg, (void)side;
	f = flow_of(mctx, s);
	if (f == NULL)
		return;
	drain(mctx, s, MOS_SIDE_CLI, f);
	drain(mctx, s, MOS_SIDE_SVR, f);
	if (++f->ends < 2)
		return;
	if (f->stale) {
		stale++;
	} else if (peer_names(mctx, s, cli, svr, sizeof cli) != 0) {
		if (lagging && errno == EBADF)
			stale++;
		else
			FAIL("getpeername: errno %s", errname(errno));
	} else {
		sha1_hex(&f->d[MOS_SIDE_SVR].sha, h[0]);
		sha1_hex(&f->d[MOS_SIDE_CLI].sha, h[1]);
		printf("flow client=%s server=%s c2s_bytes=%llu c2s_sha1=%s c2s_lost=%llu "
		       "s2c_bytes=%llu s2c_sha1=%s s2c_lost=%llu\n",
		       cli, svr, (unsigned long long)f->d[MOS_SIDE_SVR].bytes, h[0],
		       (unsigned long long)f->d[MOS_SIDE_SVR].lost,
		       (unsigned long long)f->d[MOS_SIDE_CLI].bytes, h[1],
		       (unsigned long long)f->d[MOS_SIDE_CLI].lost);
	}
	mtcp_set_uctx(mctx, s, NULL);
	free(f);
}

int main(int argc, char **argv)
{
	int zero = 0;
	mctx_t ctx;
	setup_output();
	if (argc > 2 || (argc == 2 && strcmp(argv[1], "overrun") != 0)) {
		fprintf(stderr, "usage: t_peek [overrun]\n");
		return 2;
	}
	lagging = argc == 2;
	if (mtcp_init(NULL) != 0) {
		FAIL("mtcp_init: errno %s", errname(errno));
		return finish();
	}
	ctx = mtcp_create_context(0);
	if (ctx == NULL) {
		FAIL("mtcp_create_context(0): errno %s", errname(errno));
		return finish();
	}
	mon_sock = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	CHECK(mon_sock >= 0, "mtcp_socket: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, mon_sock, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_data) == 0,
	      "register CONN_NEW_DATA: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, mon_sock, MOS_ON_CONN_END, MOS_NULL, on_end) == 0,
	      "register CONN_END: errno %s", errname(errno));
	if (!lagging) {
		off_sock = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
		CHECK(off_sock >= 0, "mtcp_socket: errno %s", errname(errno));
		CHECK(mtcp_setsockopt(ctx, off_sock, SOL_MONSOCKET, MOS_CLIBUF, &zero, sizeof zero) ==
				      0 &&
			      mtcp_setsockopt(ctx, off_sock, SOL_MONSOCKET, MOS_SVRBUF, &zero,
					      sizeof zero) == 0,
		      "MOS_CLIBUF/MOS_SVRBUF 0: errno %s", errname(errno));
		CHECK(mtcp_register_callback(ctx, off_sock, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_off) ==
			      0,
		      "register CONN_NEW_DATA on Z: errno %s", errname(errno));
	}
	mtcp_app_join(ctx);
	printf("counts events=%ld ppeek_checks=%ld stale=%ld\n", events, ppeek_checks, stale);
	if (!lagging) {
		CHECK(off_checked > 0, "no CONN_NEW_DATA on the socket without buffers");
		CHECK(errors_checked == 1, "the errors were checked %ld times", errors_checked);
		CHECK(stale == 0, "%ld connections went stale in a lossless replay", stale);
	}
	CHECK(ppeek_checks > 0, "no ppeek was checked against peek");
	mtcp_destroy_context(ctx);
	mtcp_destroy();
	return finish();
}
