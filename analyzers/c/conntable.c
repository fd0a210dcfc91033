/*
 * conntable: a table of the connections a mos sensor follows, with both endpoints' emulated
 * TCP states, in the manner of mOS's midstat sample. Written for mos from mOS's manual pages.
 *
 *     conntable [-f mos.conf] [-c N]
 *
 * Each context (one thread; -c N of them, by default one per sensor worker) keeps its own list
 * of live connections and prints it every second from a timer that re-arms itself. Every
 * connection also gives one line when it ends, and the program one summary line when the
 * sensor's input is done (or on SIGINT/SIGTERM). Standard output, one record a line:
 *
 *     table ctx=K live=N seen=S ended=E          a context's table, then its N rows:
 *     live CLIENT CLIENT_STATE SERVER SERVER_STATE
 *     end CLIENT SERVER CLIENT_STATE SERVER_STATE  a connection ended (its final states)
 *     conntable: S connections seen, E ended, O still open, X errors (C contexts, T tables)
 *
 * Addresses are a.b.c.d:port or [v6]:port; states are TCP_ESTABLISHED and the like. Errors go
 * to standard error, prefixed "conntable: ". Exit status 0, 1 on an error, 2 on a bad command
 * line.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <mos_api.h>

#define PROG "conntable"
#define MAX_CONTEXTS 1024
#define ADDR_LEN 64 /* "[" INET6_ADDRSTRLEN "]:" port */

/* One connection of a context's table. */
struct conn {
	struct conn *prev, *next;
	int sock; /* its per-flow socket */
	char client[ADDR_LEN];
	char server[ADDR_LEN];
	int state[2]; /* MOS_SIDE_CLI, MOS_SIDE_SVR */
};

/* One context: its thread's callbacks touch nothing else. */
struct context {
	mctx_t mctx;
	int sock; /* the monitoring socket */
	struct conn *head;
	unsigned long live, seen, ended, errors, tables;
};

static struct context *contexts;
static int ncontexts;
static volatile sig_atomic_t interrupted;

/* What a connection's user context holds once it ended, until the library drops its socket:
 * a second CONN_END (one comes for each side) must not bring it back. */
static char ended_mark;

static const char *state_name(int s)
{
	static const char *const names[] = {
		"TCP_CLOSED", "TCP_LISTEN", "TCP_SYN_SENT", "TCP_SYN_RCVD",
		"TCP_ESTABLISHED", "TCP_FIN_WAIT_1", "TCP_FIN_WAIT_2", "TCP_CLOSE_WAIT",
		"TCP_CLOSING", "TCP_LAST_ACK", "TCP_TIME_WAIT"
	};
	if (s >= 0 && s < (int)(sizeof(names) / sizeof(names[0])))
		return names[s];
	return "?";
}

static void format_addr(const struct sockaddr *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
	} else {
		snprintf(out, len, "?");
	}
}

/* The connection's client and server, printed, from one mtcp_getpeername(MOS_SIDE_BOTH): two
 * addresses of addrlen / 2 bytes each, client first (struct sockaddr_in, or struct sockaddr_in6
 * for IPv6). */
static int peer_names(mctx_t mctx, int sock, char *client, char *server, size_t len)
{
	union {
		struct sockaddr_in6 in6[2];
		unsigned char bytes[2 * sizeof(struct sockaddr_in6)];
	} both;
	struct sockaddr_storage cli, svr;
	socklen_t alen = sizeof(both);
	size_t each;

	memset(&both, 0, sizeof(both));
	if (mtcp_getpeername(mctx, sock, (struct sockaddr *)(void *)&both, &alen, MOS_SIDE_BOTH) < 0)
		return -1;
	each = alen / 2;
	if (each > sizeof(struct sockaddr_in6))
		each = sizeof(struct sockaddr_in6);
	memset(&cli, 0, sizeof(cli));
	memset(&svr, 0, sizeof(svr));
	memcpy(&cli, both.bytes, each);
	memcpy(&svr, both.bytes + each, each);
	format_addr((struct sockaddr *)(void *)&cli, client, len);
	format_addr((struct sockaddr *)(void *)&svr, server, len);
	return 0;
}

static struct context *context_of(mctx_t mctx)
{
	if (mctx == NULL || mctx->cpu < 0 || mctx->cpu >= ncontexts)
		return NULL;
	return &contexts[mctx->cpu];
}

static void report(struct context *c, const char *fmt, ...)
{
	va_list ap;
	char msg[256];
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, PROG ": %s\n", msg);
	if (c != NULL)
		c->errors++;
}

/* Both sides' states, from the library. */
static void read_states(struct context *c, mctx_t mctx, struct conn *k)
{
	int side;
	for (side = MOS_SIDE_CLI; side <= MOS_SIDE_SVR; side++) {
		int st = 0;
		socklen_t len = sizeof(st);
		int opt = side == MOS_SIDE_CLI ? MOS_TCP_STATE_CLI : MOS_TCP_STATE_SVR;
		if (mtcp_getsockopt(mctx, k->sock, SOL_MONSOCKET, opt, &st, &len) < 0)
			report(c, "mtcp_getsockopt(%s) on socket %d: %s",
			       side == MOS_SIDE_CLI ? "MOS_TCP_STATE_CLI" : "MOS_TCP_STATE_SVR",
			       k->sock, strerror(errno));
		else
			k->state[side] = st;
	}
}

/* The connection of `sock` in the context's table, entered the first time any event shows it
 * (a connection picked up midstream has no CONN_START). NULL once it ended. */
static struct conn *conn_of(struct context *c, mctx_t mctx, int sock)
{
	struct conn *k;
	void *u = mtcp_get_uctx(mctx, sock);

	if (u == &ended_mark)
		return NULL;
	if (u != NULL)
		return u;
	k = calloc(1, sizeof(*k));
	if (k == NULL) {
		report(c, "out of memory");
		return NULL;
	}
	k->sock = sock;
	k->state[0] = k->state[1] = -1;
	if (peer_names(mctx, sock, k->client, k->server, sizeof(k->client)) < 0) {
		report(c, "mtcp_getpeername on socket %d: %s", sock, strerror(errno));
		snprintf(k->client, sizeof(k->client), "?");
		snprintf(k->server, sizeof(k->server), "?");
	}
	read_states(c, mctx, k);
	if (mtcp_set_uctx(mctx, sock, k) < 0) {
		report(c, "mtcp_set_uctx on socket %d: %s", sock, strerror(errno));
		free(k);
		return NULL;
	}
	k->next = c->head;
	if (c->head != NULL)
		c->head->prev = k;
	c->head = k;
	c->seen++;
	c->live++;
	return k;
}

static void on_start(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c != NULL)
		conn_of(c, mctx, sock);
}

static void on_state_change(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct conn *k;
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c == NULL)
		return;
	k = conn_of(c, mctx, sock);
	if (k != NULL)
		read_states(c, mctx, k);
}

static void on_end(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct conn *k;
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c == NULL)
		return;
	k = conn_of(c, mctx, sock);
	if (k == NULL)
		return;
	read_states(c, mctx, k);
	printf("end %s %s %s %s\n", k->client, k->server, state_name(k->state[MOS_SIDE_CLI]),
	       state_name(k->state[MOS_SIDE_SVR]));
	if (k->prev != NULL)
		k->prev->next = k->next;
	else
		c->head = k->next;
	if (k->next != NULL)
		k->next->prev = k->prev;
	free(k);
	c->live--;
	c->ended++;
	if (mtcp_set_uctx(mctx, sock, &ended_mark) < 0)
		report(c, "mtcp_set_uctx on socket %d: %s", sock, strerror(errno));
}

/* A growing text, so that a whole table goes out in one write. */
struct text {
	char *p;
	size_t len, cap;
};

static int text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if (t->len + (size_t)n + 1 > t->cap) {
		size_t cap = (t->cap ? t->cap * 2 : 1024) + (size_t)n;
		char *p = realloc(t->p, cap);
		if (p == NULL)
			return -1;
		t->p = p;
		t->cap = cap;
	}
	va_start(ap, fmt);
	vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
	return 0;
}

static void print_table(struct context *c, int cpu)
{
	struct text t = { NULL, 0, 0 };
	const struct conn *k;
	int ok = text_add(&t, "table ctx=%d live=%lu seen=%lu ended=%lu\n", cpu, c->live, c->seen,
			  c->ended) == 0;
	for (k = c->head; ok && k != NULL; k = k->next)
		ok = text_add(&t, "live %-47s %-16s %-47s %-16s\n", k->client,
			      state_name(k->state[MOS_SIDE_CLI]), k->server,
			      state_name(k->state[MOS_SIDE_SVR])) == 0;
	if (!ok)
		report(c, "out of memory");
	else
		fwrite(t.p, 1, t.len, stdout);
	fflush(stdout);
	free(t.p);
	c->tables++;
}

static void on_timer(mctx_t mctx, int id, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct timeval second = { 1, 0 };
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c == NULL)
		return;
	print_table(c, mctx->cpu);
	if (mtcp_settimer(mctx, id, &second, on_timer) < 0)
		report(c, "mtcp_settimer: %s", strerror(errno));
}

static int setup(struct context *c)
{
	struct timeval second = { 1, 0 };
	mctx_t m = c->mctx;

	c->sock = mtcp_socket(m, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	if (c->sock < 0) {
		report(NULL, "mtcp_socket: %s", strerror(errno));
		return -1;
	}
	if (mtcp_register_callback(m, c->sock, MOS_ON_CONN_START, MOS_HK_SND, on_start) < 0 ||
	    mtcp_register_callback(m, c->sock, MOS_ON_TCP_STATE_CHANGE, MOS_HK_SND,
				   on_state_change) < 0 ||
	    mtcp_register_callback(m, c->sock, MOS_ON_TCP_STATE_CHANGE, MOS_HK_RCV,
				   on_state_change) < 0 ||
	    mtcp_register_callback(m, c->sock, MOS_ON_CONN_END, MOS_HK_SND, on_end) < 0) {
		report(NULL, "mtcp_register_callback: %s", strerror(errno));
		return -1;
	}
	if (mtcp_settimer(m, 1, &second, on_timer) < 0) {
		report(NULL, "mtcp_settimer: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static void on_signal(int sig)
{
	int i;
	UNUSED(sig);
	if (interrupted)
		return;
	interrupted = 1;
	for (i = 0; i < ncontexts; i++)
		if (contexts[i].mctx != NULL)
			mtcp_destroy_context(contexts[i].mctx);
}

static void usage(FILE *to)
{
	fprintf(to, "usage: " PROG " [-f mos.conf] [-c N] [-h]\n"
		    "  -f FILE  mOS configuration file (the sensor's control socket: its\n"
		    "           'control = PATH' line, else $MOS_CONTROL, else /run/mos/control.sock)\n"
		    "  -c N     contexts (threads) to run, 1 to %d (default: the sensor's workers)\n"
		    "  -h       this help\n",
		MAX_CONTEXTS);
}

int main(int argc, char **argv)
{
	const char *conf_file = NULL;
	struct mtcp_conf conf;
	struct sigaction sa;
	sigset_t block;
	unsigned long seen = 0, ended = 0, live = 0, errors = 0, tables = 0;
	int cores = 0, opt, i, status = 0;

	while ((opt = getopt(argc, argv, "f:c:h")) != -1) {
		switch (opt) {
		case 'f':
			conf_file = optarg;
			break;
		case 'c': {
			char *end;
			long n;
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || end == optarg || n < 1 || n > MAX_CONTEXTS) {
				fprintf(stderr, PROG ": -c %s: expected a number from 1 to %d\n",
					optarg, MAX_CONTEXTS);
				return 2;
			}
			cores = (int)n;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	if (mtcp_init(conf_file) < 0) {
		fprintf(stderr, PROG ": mtcp_init(%s): %s\n", conf_file ? conf_file : "no file",
			strerror(errno));
		return 1;
	}
	if (mtcp_getconf(&conf) < 0) {
		fprintf(stderr, PROG ": mtcp_getconf: %s\n", strerror(errno));
		mtcp_destroy();
		return 1;
	}
	if (cores > 0) {
		conf.num_cores = cores;
		if (mtcp_setconf(&conf) < 0) {
			fprintf(stderr, PROG ": mtcp_setconf(num_cores = %d): %s\n", cores,
				strerror(errno));
			mtcp_destroy();
			return 1;
		}
	}
	if (conf.num_cores < 1 || conf.num_cores > MAX_CONTEXTS) {
		fprintf(stderr, PROG ": the configuration has %d cores, expected 1 to %d\n",
			conf.num_cores, MAX_CONTEXTS);
		mtcp_destroy();
		return 1;
	}
	contexts = calloc((size_t)conf.num_cores, sizeof(*contexts));
	if (contexts == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		mtcp_destroy();
		return 1;
	}
	ncontexts = conf.num_cores;

	for (i = 0; i < ncontexts; i++) {
		contexts[i].mctx = mtcp_create_context(i);
		if (contexts[i].mctx == NULL) {
			fprintf(stderr, PROG ": mtcp_create_context(%d): %s\n", i, strerror(errno));
			status = 1;
			break;
		}
		if (setup(&contexts[i]) < 0) {
			status = 1;
			break;
		}
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (status == 0)
		for (i = 0; i < ncontexts; i++)
			mtcp_app_join(contexts[i].mctx);

	/* The contexts go (unless a signal already took them), then their tables. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, NULL);
	for (i = 0; i < ncontexts; i++) {
		if (!interrupted && contexts[i].mctx != NULL)
			mtcp_destroy_context(contexts[i].mctx);
		contexts[i].mctx = NULL;
	}
	for (i = 0; i < ncontexts; i++) {
		struct context *c = &contexts[i];
		seen += c->seen;
		ended += c->ended;
		live += c->live;
		errors += c->errors;
		tables += c->tables;
		while (c->head != NULL) {
			struct conn *k = c->head;
			c->head = k->next;
			free(k);
		}
	}
	if (status == 0)
		printf(PROG ": %lu connections seen, %lu ended, %lu still open, %lu errors "
			    "(%d contexts, %lu tables)\n",
		       seen, ended, live, errors, ncontexts, tables);
	fflush(stdout);
	free(contexts);
	contexts = NULL;
	ncontexts = 0;
	mtcp_destroy();
	return status != 0 ? status : errors != 0;
}
