/*
 * t_crash: a C analyzer that misbehaves in a callback, for the isolation tests (the sensor
 * and the other analyzers must go on).
 *
 *   t_crash exit    the 5th MOS_ON_CONN_NEW_DATA callback calls exit(3)
 *   t_crash block   the 5th blocks forever (the sensor detaches it after its stall timeout)
 *   t_crash segv    the 5th writes through a null pointer (SIGSEGV)
 *
 * Prints `crashing mode=MODE` just before; reaching the end of the replay is a failure.
 */
#include "check.h"

#include <signal.h>
#include <unistd.h>

static const char *mode;
static long calls;
static int *volatile nowhere; /* NULL, read at run time so the store cannot be optimized */

static void on_data(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	(void)mctx, (void)sock, (void)side, (void)event, (void)arg;
	if (++calls != 5)
		return;
	printf("crashing mode=%s\n", mode);
	fflush(stdout);
	if (strcmp(mode, "exit") == 0) {
		exit(3);
	} else if (strcmp(mode, "block") == 0) {
		for (;;)
			pause();
	} else {
		*nowhere = 1;
	}
}

int main(int argc, char **argv)
{
	mctx_t ctx;
	int s;
	setup_output();
	if (argc != 2 || (strcmp(argv[1], "exit") != 0 && strcmp(argv[1], "block") != 0 &&
			  strcmp(argv[1], "segv") != 0)) {
		fprintf(stderr, "usage: t_crash exit | block | segv\n");
		return 2;
	}
	mode = argv[1];
	if (mtcp_init(NULL) != 0) {
		FAIL("mtcp_init: errno %s", errname(errno));
		return finish();
	}
	ctx = mtcp_create_context(0);
	if (ctx == NULL) {
		FAIL("mtcp_create_context(0): errno %s", errname(errno));
		return finish();
	}
	s = mtcp_socket(ctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	CHECK(s >= 0, "mtcp_socket: errno %s", errname(errno));
	CHECK(mtcp_register_callback(ctx, s, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_data) == 0,
	      "register: errno %s", errname(errno));
	printf("ready\n");
	mtcp_app_join(ctx);
	FAIL("the replay ended after %ld callbacks without the crash", calls);
	return finish();
}
