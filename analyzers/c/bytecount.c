/*
 * bytecount: counts each connection's stream bytes with mtcp_peek, in each direction, as a
 * mos sensor reassembles them. Written for mos from mOS's manual pages.
 *
 *     bytecount [-f mos.conf] [-c N]
 *
 * On every MOS_ON_CONN_NEW_DATA the connection's two streams are read with mtcp_peek until it
 * says ENODATA; bytes the library could no longer give (mtcp_peek's negative return other
 * than -1: -(bytes lost), with errno ENODATA) are counted as lost. Remember that the server's
 * stream (MOS_SIDE_SVR) holds what the client sent. Standard output, one record a line:
 *
 *     conn CLIENT SERVER c2s=BYTES s2c=BYTES lost=C2S/S2C ctx=K
 *     bytecount: N connections, c2s=BYTES s2c=BYTES lost=C2S/S2C, X errors (C contexts)
 *
 * A conn line comes when the connection ends (MOS_ON_CONN_END), the last line once the
 * sensor's input is done (or on SIGINT/SIGTERM). c2s and s2c count every byte of the stream,
 * read or lost; lost counts those lost. mtcp_peek reports a loss as -(bytes lost) with ENODATA,
 * so a loss of exactly one byte reads like "no data" (-1, ENODATA): the lost counts come from
 * mos's MOS_LOST_CLIBUF / MOS_LOST_SVRBUF socket options at the connection's end, which
 * count every byte mtcp_peek skipped.
 * Addresses are a.b.c.d:port or [v6]:port. Errors go to standard error, prefixed
 * "bytecount: ". Exit status 0, 1 on an error, 2 on a bad command line.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <mos_api.h>

#define PROG "bytecount"
#define MAX_CONTEXTS 1024
#define ADDR_LEN 64
#define PEEK_BUF (64 * 1024)

/* One connection. Counts are by stream: [MOS_SIDE_SVR] is client to server. */
struct flow {
	struct flow *prev, *next;
	int sock;
	char client[ADDR_LEN];
	char server[ADDR_LEN];
	uint64_t bytes[2];
	uint64_t lost[2];
};

/* One context: its thread's callbacks touch nothing else. */
struct context {
	mctx_t mctx;
	int sock;
	struct flow *head;
	char *buf; /* PEEK_BUF bytes */
	unsigned long connections, errors;
	uint64_t bytes[2], lost[2];
};

static struct context *contexts;
static int ncontexts;
static volatile sig_atomic_t interrupted;

/* A connection's user context after it ended (a second CONN_END, one per side, must not bring
 * it back). */
static char ended_mark;

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

/* The connection of `sock`, created the first time an event shows it; NULL once it ended. */
static struct flow *flow_of(struct context *c, mctx_t mctx, int sock)
{
	struct flow *f;
	void *u = mtcp_get_uctx(mctx, sock);

	if (u == &ended_mark)
		return NULL;
	if (u != NULL)
		return u;
	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		report(c, "out of memory");
		return NULL;
	}
	f->sock = sock;
	if (peer_names(mctx, sock, f->client, f->server, sizeof(f->client)) < 0) {
		report(c, "mtcp_getpeername on socket %d: %s", sock, strerror(errno));
		snprintf(f->client, sizeof(f->client), "?");
		snprintf(f->server, sizeof(f->server), "?");
	}
	if (mtcp_set_uctx(mctx, sock, f) < 0) {
		report(c, "mtcp_set_uctx on socket %d: %s", sock, strerror(errno));
		free(f);
		return NULL;
	}
	f->next = c->head;
	if (c->head != NULL)
		c->head->prev = f;
	c->head = f;
	c->connections++;
	return f;
}

/* Reads both streams of the connection until there is nothing more. */
static void drain(struct context *c, mctx_t mctx, struct flow *f)
{
	int side;
	for (side = MOS_SIDE_CLI; side <= MOS_SIDE_SVR; side++) {
		for (;;) {
			ssize_t n = mtcp_peek(mctx, f->sock, side, c->buf, PEEK_BUF);
			if (n > 0) {
				f->bytes[side] += (uint64_t)n;
			} else if (n < -1 && errno == ENODATA) {
				/* An overrun: the bytes were overwritten before this read. */
				f->bytes[side] += (uint64_t)-n;
				f->lost[side] += (uint64_t)-n;
			} else if (n == -1 && errno == ENODATA) {
				break;
			} else {
				report(c, "mtcp_peek(%s) on socket %d: %s",
				       side == MOS_SIDE_CLI ? "MOS_SIDE_CLI" : "MOS_SIDE_SVR", f->sock,
				       n == 0 ? "returned 0" : strerror(errno));
				break;
			}
		}
	}
}

static void on_data(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct flow *f;
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c == NULL)
		return;
	f = flow_of(c, mctx, sock);
	if (f != NULL)
		drain(c, mctx, f);
}

static void on_end(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct flow *f;
	int s;
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c == NULL)
		return;
	f = flow_of(c, mctx, sock);
	if (f == NULL)
		return;
	drain(c, mctx, f);
	for (s = MOS_SIDE_CLI; s <= MOS_SIDE_SVR; s++) {
		uint64_t lost = 0;
		socklen_t len = sizeof lost;
		if (mtcp_getsockopt(mctx, sock, SOL_MONSOCKET,
				    s == MOS_SIDE_CLI ? MOS_LOST_CLIBUF : MOS_LOST_SVRBUF, &lost, &len) == 0) {
			/* Every byte read or skipped: the bytes read, and all the skipped ones. */
			f->bytes[s] = f->bytes[s] - f->lost[s] + lost;
			f->lost[s] = lost;
		} else {
			report(c, "mtcp_getsockopt(MOS_LOST) on socket %d: %s", sock, strerror(errno));
		}
	}
	printf("conn %s %s c2s=%" PRIu64 " s2c=%" PRIu64 " lost=%" PRIu64 "/%" PRIu64 " ctx=%d\n",
	       f->client, f->server, f->bytes[MOS_SIDE_SVR], f->bytes[MOS_SIDE_CLI],
	       f->lost[MOS_SIDE_SVR], f->lost[MOS_SIDE_CLI], mctx->cpu);
	for (s = 0; s < 2; s++) {
		c->bytes[s] += f->bytes[s];
		c->lost[s] += f->lost[s];
	}
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		c->head = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	free(f);
	if (mtcp_set_uctx(mctx, sock, &ended_mark) < 0)
		report(c, "mtcp_set_uctx on socket %d: %s", sock, strerror(errno));
}

static int setup(struct context *c)
{
	mctx_t m = c->mctx;

	c->buf = malloc(PEEK_BUF);
	if (c->buf == NULL) {
		report(NULL, "out of memory");
		return -1;
	}
	c->sock = mtcp_socket(m, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	if (c->sock < 0) {
		report(NULL, "mtcp_socket: %s", strerror(errno));
		return -1;
	}
	if (mtcp_register_callback(m, c->sock, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_data) < 0 ||
	    mtcp_register_callback(m, c->sock, MOS_ON_CONN_END, MOS_HK_SND, on_end) < 0) {
		report(NULL, "mtcp_register_callback: %s", strerror(errno));
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
	unsigned long connections = 0, errors = 0;
	uint64_t bytes[2] = { 0, 0 }, lost[2] = { 0, 0 };
	int cores = 0, opt, i, s, status = 0;

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
		connections += c->connections;
		errors += c->errors;
		for (s = 0; s < 2; s++) {
			bytes[s] += c->bytes[s];
			lost[s] += c->lost[s];
		}
		while (c->head != NULL) {
			struct flow *f = c->head;
			c->head = f->next;
			free(f);
		}
		free(c->buf);
	}
	if (status == 0)
		printf(PROG ": %lu connections, c2s=%" PRIu64 " s2c=%" PRIu64 " lost=%" PRIu64
			    "/%" PRIu64 ", %lu errors (%d contexts)\n",
		       connections, bytes[MOS_SIDE_SVR], bytes[MOS_SIDE_CLI], lost[MOS_SIDE_SVR],
		       lost[MOS_SIDE_CLI], errors, ncontexts);
	fflush(stdout);
	free(contexts);
	contexts = NULL;
	ncontexts = 0;
	mtcp_destroy();
	return status != 0 ? status : errors != 0;
}
