/*
 * udefilter: the connections a libpcap expression selects, and their HTTP request lines found
 * by a user-defined event. Written for mos from mOS's manual pages.
 *
 *     udefilter [-f mos.conf] [-c N] EXPRESSION
 *
 * The monitoring socket is bound to EXPRESSION as its SYN filter (mtcp_bind_monitor_filter):
 * the sensor gives it the connections whose first packet (the SYN, or the first packet seen of
 * a connection picked up midstream) the expression takes, tcpdump's syntax. A user-defined
 * event on MOS_ON_CONN_NEW_DATA (mtcp_define_event) has a filter that reads the client's bytes
 * from stream offset 0 with mtcp_ppeek and fires once per connection whose first line is an
 * HTTP request line:
 *
 *     METHOD SP TARGET SP HTTP/d.d   then LF (one CR before it is dropped)
 *
 * METHOD 1 to 16 capital letters, TARGET one or more bytes none a space or a control byte,
 * the line at most 4096 bytes (LF excluded; a longer first line is no request). For a GET
 * the filter also raises a child event (mtcp_alloc_event, mtcp_raise_event), whose callback
 * prints the GET. Standard output, one record a line:
 *
 *     conn CLIENT SERVER                     the first event of a connection the socket received
 *     request CLIENT SERVER METHOD TARGET    the user-defined event
 *     get CLIENT SERVER TARGET               the child event
 *     udefilter: N connections, R request lines (G GET), X errors (C contexts)
 *
 * TARGET is printed with bytes outside '!'..'~' as %XX. Addresses are a.b.c.d:port or
 * [v6]:port. Errors go to standard error, prefixed "udefilter: ". Exit status 0, 1 on an
 * error (a filter the sensor refuses among them), 2 on a bad command line.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <mos_api.h>

#define PROG "udefilter"
#define MAX_CONTEXTS 1024
#define ADDR_LEN 64
#define MAX_LINE 4096
#define MAX_METHOD 16

/* One connection. */
struct flow {
	struct flow *prev, *next;
	int sock;
	char client[ADDR_LEN];
	char server[ADDR_LEN];
	bool decided;               /* its first line was looked at */
	char method[MAX_METHOD + 1];
	char *target;               /* printable (escaped) */
};

/* One context: its thread's callbacks touch nothing else. */
struct context {
	mctx_t mctx;
	int sock;
	struct flow *head;
	char *buf; /* MAX_LINE + 1 bytes */
	unsigned long connections, requests, gets, errors;
};

static struct context *contexts;
static int ncontexts;
static volatile sig_atomic_t interrupted;
static event_t request_event; /* the user-defined event */
static event_t get_event;     /* its child, raised for GET */
static size_t max_line = MAX_LINE; /* what the filter gets as its argument */

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

static void free_flow(struct flow *f)
{
	free(f->target);
	free(f);
}

/* The connection of `sock`, entered (and printed) the first time any event shows it; NULL
 * once it ended. */
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
		free_flow(f);
		return NULL;
	}
	f->next = c->head;
	if (c->head != NULL)
		c->head->prev = f;
	c->head = f;
	c->connections++;
	printf("conn %s %s\n", f->client, f->server);
	return f;
}

/* `METHOD SP TARGET SP HTTP/d.d`: the method's and the target's lengths, or false. */
static bool parse_request_line(const char *l, size_t n, size_t *mlen, size_t *tlen)
{
	size_t i = 0, t;
	while (i < n && i < MAX_METHOD && l[i] >= 'A' && l[i] <= 'Z')
		i++;
	if (i == 0 || i >= n || l[i] != ' ')
		return false;
	*mlen = i;
	t = ++i;
	while (i < n && (unsigned char)l[i] > ' ' && (unsigned char)l[i] != 0x7f)
		i++;
	if (i == t || i >= n || l[i] != ' ')
		return false;
	*tlen = i - t;
	i++;
	return n - i == 8 && memcmp(l + i, "HTTP/", 5) == 0 && l[i + 5] >= '0' &&
	       l[i + 5] <= '9' && l[i + 6] == '.' && l[i + 7] >= '0' && l[i + 7] <= '9';
}

/* Bytes outside '!'..'~' as %XX. */
static char *escape(const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(3 * n + 1), *o = out;
	size_t i;
	if (out == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char b = (unsigned char)s[i];
		if (b >= '!' && b <= '~') {
			*o++ = (char)b;
		} else {
			*o++ = '%';
			*o++ = hex[b >> 4];
			*o++ = hex[b & 15];
		}
	}
	*o = '\0';
	return out;
}

/* The user-defined event's filter: true once, when the client's first line is complete and is
 * a request line. Raises the child event for a GET. */
static bool is_http_request(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct flow *f;
	size_t limit = MAX_LINE, n, mlen, tlen;
	ssize_t got;
	char *lf;
	UNUSED(event);

	/* The server's stack receives what the client sends. */
	if (c == NULL || side != MOS_SIDE_SVR)
		return false;
	f = flow_of(c, mctx, sock);
	if (f == NULL || f->decided)
		return false;
	if (arg != NULL && arg->arg != NULL && arg->len == sizeof(size_t))
		memcpy(&limit, arg->arg, sizeof(limit));
	if (limit > MAX_LINE)
		limit = MAX_LINE;
	got = mtcp_ppeek(mctx, sock, MOS_SIDE_SVR, c->buf, limit + 1, 0);
	if (got < 0) {
		if (errno != ENODATA)
			report(c, "mtcp_ppeek on socket %d: %s", sock, strerror(errno));
		return false;
	}
	n = (size_t)got;
	lf = memchr(c->buf, '\n', n);
	if (lf == NULL) {
		/* Undecided until the line ends, unless it is already too long. */
		f->decided = n > limit;
		return false;
	}
	f->decided = true;
	n = (size_t)(lf - c->buf);
	if (n > 0 && c->buf[n - 1] == '\r')
		n--;
	if (!parse_request_line(c->buf, n, &mlen, &tlen))
		return false;
	memcpy(f->method, c->buf, mlen);
	f->method[mlen] = '\0';
	f->target = escape(c->buf + mlen + 1, tlen);
	if (f->target == NULL) {
		report(c, "out of memory");
		return false;
	}
	if (strcmp(f->method, "GET") == 0 && mtcp_raise_event(mctx, get_event) < 0)
		report(c, "mtcp_raise_event on socket %d: %s", sock, strerror(errno));
	return true;
}

static void on_request(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct flow *f;
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c == NULL || (f = flow_of(c, mctx, sock)) == NULL || f->target == NULL)
		return;
	printf("request %s %s %s %s\n", f->client, f->server, f->method, f->target);
	c->requests++;
}

static void on_get(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct flow *f;
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c == NULL || (f = flow_of(c, mctx, sock)) == NULL || f->target == NULL)
		return;
	printf("get %s %s %s\n", f->client, f->server, f->target);
	c->gets++;
}

static void on_event(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c != NULL)
		flow_of(c, mctx, sock);
}

static void on_end(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct context *c = context_of(mctx);
	struct flow *f;
	UNUSED(side);
	UNUSED(event);
	UNUSED(arg);
	if (c == NULL || (f = flow_of(c, mctx, sock)) == NULL)
		return;
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		c->head = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	free_flow(f);
	if (mtcp_set_uctx(mctx, sock, &ended_mark) < 0)
		report(c, "mtcp_set_uctx on socket %d: %s", sock, strerror(errno));
}

static int setup(struct context *c, char *expression)
{
	union monitor_filter ft;
	mctx_t m = c->mctx;

	c->buf = malloc(MAX_LINE + 1);
	if (c->buf == NULL) {
		report(NULL, "out of memory");
		return -1;
	}
	c->sock = mtcp_socket(m, AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
	if (c->sock < 0) {
		report(NULL, "mtcp_socket: %s", strerror(errno));
		return -1;
	}
	memset(&ft, 0, sizeof(ft));
	ft.stream_syn_filter = expression;
	if (mtcp_bind_monitor_filter(m, c->sock, &ft) < 0) {
		report(NULL, "mtcp_bind_monitor_filter('%s'): %s", expression, strerror(errno));
		return -1;
	}
	if (mtcp_register_callback(m, c->sock, MOS_ON_CONN_START, MOS_HK_SND, on_event) < 0 ||
	    mtcp_register_callback(m, c->sock, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_event) < 0 ||
	    mtcp_register_callback(m, c->sock, request_event, MOS_NULL, on_request) < 0 ||
	    mtcp_register_callback(m, c->sock, get_event, MOS_NULL, on_get) < 0 ||
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
	fprintf(to, "usage: " PROG " [-f mos.conf] [-c N] [-h] EXPRESSION\n"
		    "  EXPRESSION  libpcap filter (tcpdump's syntax) on each connection's first packet,\n"
		    "              for instance 'tcp port 80'\n"
		    "  -f FILE     mOS configuration file (the sensor's control socket: its\n"
		    "              'control = PATH' line, else $MOS_CONTROL, else /run/mos/control.sock)\n"
		    "  -c N        contexts (threads) to run, 1 to %d (default: the sensor's workers)\n"
		    "  -h          this help\n",
		MAX_CONTEXTS);
}

int main(int argc, char **argv)
{
	const char *conf_file = NULL;
	char *expression;
	struct mtcp_conf conf;
	struct filter_arg farg;
	struct sigaction sa;
	sigset_t block;
	unsigned long connections = 0, requests = 0, gets = 0, errors = 0;
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
	if (argc - optind != 1) {
		fprintf(stderr, PROG ": %s\n",
			optind == argc ? "no filter expression given" : "more than one argument "
									 "(quote the expression)");
		usage(stderr);
		return 2;
	}
	expression = argv[optind];

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

	/* The events, once for every context. */
	farg.arg = &max_line;
	farg.len = sizeof(max_line);
	request_event = mtcp_define_event(MOS_ON_CONN_NEW_DATA, is_http_request, &farg);
	if (request_event == MOS_NULL_EVENT) {
		fprintf(stderr, PROG ": mtcp_define_event: %s\n", strerror(errno));
		mtcp_destroy();
		return 1;
	}
	get_event = mtcp_alloc_event(request_event);
	if (get_event == MOS_NULL_EVENT) {
		fprintf(stderr, PROG ": mtcp_alloc_event: %s\n", strerror(errno));
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
		if (setup(&contexts[i], expression) < 0) {
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
		requests += c->requests;
		gets += c->gets;
		errors += c->errors;
		while (c->head != NULL) {
			struct flow *f = c->head;
			c->head = f->next;
			free_flow(f);
		}
		free(c->buf);
	}
	if (status == 0)
		printf(PROG ": %lu connections, %lu request lines (%lu GET), %lu errors "
			    "(%d contexts)\n",
		       connections, requests, gets, errors, ncontexts);
	fflush(stdout);
	free(contexts);
	contexts = NULL;
	ncontexts = 0;
	mtcp_destroy();
	return status != 0 ? status : errors != 0;
}
