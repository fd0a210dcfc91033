/*
 * t_context: the context and configuration calls (mtcp_init, mtcp_getconf, mtcp_setconf,
 * mtcp_create_context, mtcp_app_join, mtcp_destroy_context, mtcp_destroy,
 * mtcp_register_signal).
 *
 *   t_context nosensor          mtcp_init with no sensor behind the control socket
 *   t_context run CONF CORES    mtcp_init(CONF) (the control socket named in the file), then
 *                               CORES contexts (mtcp_setconf), each printing the connections
 *                               it sees: `conn cpu=N client=A server=B`; with 2 or more, a
 *                               callback of one context calls the other's (EPERM)
 *   t_context sigdestroy        one context; SIGTERM's handler (mtcp_register_signal) calls
 *                               mtcp_destroy_context, after which mtcp_app_join returns
 *
 * Prints `conf ...` lines for the test to compare with the sensor's configuration, `errno`
 * lines for each error checked, `FAIL ...` for each check that failed, and `done failures=N`.
 */
#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#define MAX_CTX 8

struct ctx_seen {
	mctx_t mctx;
	int sock;
	pthread_t thread;
	int have_thread;
	int conns;
	int other_thread; /* callbacks run on another thread than the first */
	int wrong_ctx;    /* callbacks given another context */
};

static struct ctx_seen seen[MAX_CTX];
static pthread_t main_thread;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int ncores, cross_checked;

/* From a callback of one context, another context's calls: EPERM (the pages' "permission
 * denied": each context is used from its own callbacks or from outside any). */
static void cross_context(mctx_t mctx, int sock, int side)
{
	mctx_t other = seen[(mctx->cpu + 1) % ncores].mctx;
	struct pkt_info pi;
	char buf[16];
	int v = 0;
	socklen_t len = sizeof v;
	EXPECT_NULL_ERRNO("get_uctx_other_context", mtcp_get_uctx(other, sock), EPERM);
	EXPECT_ERRNO("peek_other_context", mtcp_peek(other, sock, side, buf, sizeof buf), -1, EPERM);
	EXPECT_ERRNO("ppeek_other_context", mtcp_ppeek(other, sock, side, buf, sizeof buf, 0), -1,
		     EPERM);
	EXPECT_ERRNO("getsockopt_other_context",
		     mtcp_getsockopt(other, sock, SOL_MONSOCKET, MOS_TCP_STATE_CLI, &v, &len), -1,
		     EPERM);
	EXPECT_ERRNO("setsockopt_other_context",
		     mtcp_setsockopt(other, sock, SOL_MONSOCKET, MOS_CLIBUF, &v, sizeof v), -1, EPERM);
	EXPECT_ERRNO("getlastpkt_other_context", mtcp_getlastpkt(other, sock, side, &pi), -1, EPERM);
	EXPECT_ERRNO("setlastpkt_other_context_enotsup",
		     mtcp_setlastpkt(other, sock, side, 0, NULL, 0, MOS_DROP), -1, ENOTSUP);
}

static void on_end(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	char cli[80], svr[80];
	struct ctx_seen *s;
	(void)arg;
	if (mctx == NULL || mctx->cpu < 0 || mctx->cpu >= MAX_CTX) {
		FAIL("a callback got context %p", (void *)mctx);
		return;
	}
	s = &seen[mctx->cpu];
	pthread_mutex_lock(&lock);
	if (s->mctx != mctx)
		s->wrong_ctx++;
	if (!s->have_thread) {
		s->thread = pthread_self();
		s->have_thread = 1;
	} else if (!pthread_equal(s->thread, pthread_self())) {
		s->other_thread++;
	}
	pthread_mutex_unlock(&lock);
	CHECK(event == MOS_ON_CONN_END, "on_end called for event %#llx", (unsigned long long)event);
	CHECK(sock >= 32, "per-flow socket id %d below 32", sock);
	if (ncores >= 2 && __sync_bool_compare_and_swap(&cross_checked, 0, 1))
		cross_context(mctx, sock, side);
	if (side != MOS_SIDE_SVR)
		return; /* CONN_END comes for both sides, the server's last */
	if (peer_names(mctx, sock, cli, svr, sizeof cli) != 0) {
		FAIL("getpeername in CONN_END: errno %s", errname(errno));
		return;
	}
	pthread_mutex_lock(&lock);
	s->conns++;
	pthread_mutex_unlock(&lock);
	printf("conn cpu=%d client=%s server=%s\n", mctx->cpu, cli, svr);
}

static int usr1_a, usr1_b;
static void handler_a(int sig)
{
	(void)sig;
	usr1_a++;
}
static void handler_b(int sig)
{
	(void)sig;
	usr1_b++;
}

static void print_conf(const char *tag, const struct mtcp_conf *c)
{
	printf("%s num_cores=%d max_concurrency=%d max_num_buffers=%d rcvbuf_size=%d "
	       "sndbuf_size=%d tcp_timewait=%d tcp_timeout=%d cpu_mask=%llu\n",
	       tag, c->num_cores, c->max_concurrency, c->max_num_buffers, c->rcvbuf_size,
	       c->sndbuf_size, c->tcp_timewait, c->tcp_timeout, (unsigned long long)c->cpu_mask);
}

/* A monitoring socket on mctx with on_end registered. */
static int watch(mctx_t mctx)
{
	int s = mtcp_socket(mctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	if (s < 0) {
		FAIL("mtcp_socket on cpu %d: errno %s", mctx->cpu, errname(errno));
		return -1;
	}
	if (mtcp_register_callback(mctx, s, MOS_ON_CONN_END, MOS_NULL, on_end) != 0)
		FAIL("register CONN_END on cpu %d: errno %s", mctx->cpu, errname(errno));
	return s;
}

static int nosensor(void)
{
	struct mtcp_conf conf;
	int r, e;
	errno = 0;
	r = mtcp_init(NULL);
	e = errno;
	printf("init ret=%d errno=%s\n", r, errname(e));
	CHECK(r == -1, "mtcp_init with no sensor returned %d", r);
	CHECK(e != 0, "mtcp_init with no sensor left errno 0");
	/* Nothing works without a sensor. */
	CHECK(mtcp_create_context(0) == NULL, "mtcp_create_context after a failed mtcp_init");
	memset(&conf, 0, sizeof conf);
	printf("getconf_uninit ret=%d\n", mtcp_getconf(&conf));
	return finish();
}

static volatile sig_atomic_t terms;
static mctx_t the_ctx;
static void on_term(int sig)
{
	(void)sig;
	terms++;
	mtcp_destroy_context(the_ctx);
}

static int sigdestroy(void)
{
	if (mtcp_init(NULL) != 0) {
		FAIL("mtcp_init: errno %s", errname(errno));
		return finish();
	}
	main_thread = pthread_self();
	the_ctx = mtcp_create_context(0);
	if (the_ctx == NULL) {
		FAIL("mtcp_create_context(0): errno %s", errname(errno));
		return finish();
	}
	seen[0].mctx = the_ctx;
	seen[0].sock = watch(the_ctx);
	/* (What it returns is checked in `run`.) */
	if (mtcp_register_signal(SIGTERM, on_term) == SIG_ERR)
		FAIL("mtcp_register_signal(SIGTERM) failed");
	printf("ready\n");
	mtcp_app_join(the_ctx);
	printf("joined terms=%d conns=%d\n", (int)terms, seen[0].conns);
	CHECK(terms == 1, "app_join returned with %d SIGTERMs handled", (int)terms);
	CHECK(mtcp_destroy() == 0, "mtcp_destroy: errno %s", errname(errno));
	return finish();
}

static int run(const char *conf_file, int cores)
{
	struct mtcp_conf conf, conf2;
	mtcp_sighandler_t prev;
	mctx_t ctx[MAX_CTX];
	int i, total = 0;

	main_thread = pthread_self();
	if (cores < 1 || cores > MAX_CTX) {
		FAIL("bad core count %d", cores);
		return finish();
	}
	if (mtcp_init(conf_file) != 0) {
		FAIL("mtcp_init(%s): errno %s", conf_file, errname(errno));
		return finish();
	}
	EXPECT_ERRNO("getconf_null", mtcp_getconf(NULL), -1, EINVAL);
	EXPECT_ERRNO("setconf_null", mtcp_setconf(NULL), -1, EINVAL);

	memset(&conf, 0x5a, sizeof conf);
	CHECK(mtcp_getconf(&conf) == 0, "mtcp_getconf: errno %s", errname(errno));
	print_conf("conf", &conf);
	CHECK(conf.num_cores >= 1, "num_cores %d", conf.num_cores);
	CHECK(conf.cpu_mask == (conf.num_cores >= 64 ? ~0ULL : (1ULL << conf.num_cores) - 1),
	      "cpu_mask %#llx for %d cores", (unsigned long long)conf.cpu_mask, conf.num_cores);

	/* Fewer contexts than the sensor has workers, as midstat sets it. */
	conf.num_cores = cores;
	ncores = cores;
	CHECK(mtcp_setconf(&conf) == 0, "mtcp_setconf(num_cores=%d): errno %s", cores,
	      errname(errno));
	memset(&conf2, 0, sizeof conf2);
	CHECK(mtcp_getconf(&conf2) == 0, "mtcp_getconf: errno %s", errname(errno));
	print_conf("conf2", &conf2);
	CHECK(conf2.num_cores == cores, "num_cores %d after setting %d", conf2.num_cores, cores);
	CHECK(conf2.cpu_mask == (1ULL << cores) - 1, "cpu_mask %#llx for %d cores",
	      (unsigned long long)conf2.cpu_mask, cores);

	/* mtcp_register_signal gives back the handler it replaces. */
	prev = mtcp_register_signal(SIGUSR1, handler_a);
	CHECK(prev != handler_a, "the first registration returned the new handler");
	prev = mtcp_register_signal(SIGUSR1, handler_b);
	CHECK(prev == handler_a, "the second registration did not return the first handler");
	raise(SIGUSR1);
	CHECK(usr1_a == 0 && usr1_b == 1, "after raise(SIGUSR1): a=%d b=%d", usr1_a, usr1_b);
	printf("signal a=%d b=%d\n", usr1_a, usr1_b);

	/* Contexts: one per cpu below num_cores, once each. */
	/* The page gives no errno for mtcp_create_context: NULL is the failure. */
	CHECK(mtcp_create_context(-1) == NULL, "mtcp_create_context(-1) gave a context");
	CHECK(mtcp_create_context(cores) == NULL, "mtcp_create_context(%d) with num_cores %d",
	      cores, cores);
	for (i = 0; i < cores; i++) {
		ctx[i] = mtcp_create_context(i);
		if (ctx[i] == NULL) {
			FAIL("mtcp_create_context(%d): errno %s", i, errname(errno));
			return finish();
		}
		CHECK(ctx[i]->cpu == i, "context %d has cpu %d", i, ctx[i]->cpu);
		seen[i].mctx = ctx[i];
	}
	CHECK(mtcp_create_context(0) == NULL, "mtcp_create_context(0) twice gave a context");
	for (i = 0; i < cores; i++)
		seen[i].sock = watch(ctx[i]);
	for (i = 0; i < cores; i++)
		mtcp_app_join(ctx[i]);
	for (i = 0; i < cores; i++) {
		struct ctx_seen *s = &seen[i];
		printf("context cpu=%d conns=%d\n", i, s->conns);
		total += s->conns;
		CHECK(s->other_thread == 0, "cpu %d: %d callbacks on another thread", i,
		      s->other_thread);
		CHECK(s->wrong_ctx == 0, "cpu %d: %d callbacks given another context", i,
		      s->wrong_ctx);
		if (s->have_thread) {
			int j;
			CHECK(!pthread_equal(s->thread, main_thread),
			      "cpu %d's callbacks ran on the main thread", i);
			for (j = 0; j < i; j++)
				CHECK(!seen[j].have_thread || !pthread_equal(seen[j].thread, s->thread),
				      "cpus %d and %d share a thread", j, i);
		}
	}
	printf("total conns=%d\n", total);
	CHECK(cores < 2 || cross_checked, "the cross-context calls were not checked");
	for (i = 0; i < cores; i++)
		CHECK(mtcp_destroy_context(ctx[i]) == 0, "mtcp_destroy_context(%d): errno %s", i,
		      errname(errno));
	CHECK(mtcp_destroy() == 0, "mtcp_destroy: errno %s", errname(errno));
	return finish();
}

int main(int argc, char **argv)
{
	setup_output();
	if (argc >= 2 && strcmp(argv[1], "nosensor") == 0)
		return nosensor();
	if (argc >= 2 && strcmp(argv[1], "sigdestroy") == 0)
		return sigdestroy();
	if (argc >= 4 && strcmp(argv[1], "run") == 0)
		return run(argv[2], atoi(argv[3]));
	fprintf(stderr, "usage: t_context nosensor | run CONF CORES | sigdestroy\n");
	return 2;
}
