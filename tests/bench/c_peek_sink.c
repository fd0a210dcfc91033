/*
 * c_peek_sink: peek-sink (tests/src/bin/peek-sink.rs) written in C against libmos, for
 * pub-bench's pub2c mode: the C path against the Rust one in the same run.
 *
 * It attaches with one context, registers MOS_ON_CONN_NEW_DATA, and on each event peeks every
 * new byte of the event's side into a 64 KiB scratch buffer, timing its peek loops. At the end
 * it copies the same chunk sizes, grouped as the callbacks read them, with memcpy from a
 * 256 KiB source into the same buffer, timed the same way, and prints one JSON line with
 * peek-sink's keys. A negative peek (bytes the stream lost) is counted as gap bytes: the C
 * API does not tell a gap from an overrun, and in a lossless replay only gaps happen.
 *
 * usage: c_peek_sink --control PATH [--name NAME] [--filter EXPR]
 */
#define _POSIX_C_SOURCE 200809L
#include <mos_api.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCRATCH (64 * 1024)
#define SOURCE (256 * 1024)

static char scratch[SCRATCH];
static unsigned long long callbacks, bytes, peeks, data_peeks, gaps, gap_bytes, errors;
static unsigned long long peek_ns;
static int first_errno;
static unsigned *chunks, *group_ends;
static size_t nchunks, cap_chunks, ngroups, cap_groups;

static unsigned long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}

static void push(unsigned **v, size_t *n, size_t *cap, unsigned x)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 1 << 20;
		unsigned *p = realloc(*v, c * sizeof **v);
		if (!p) {
			fprintf(stderr, "c_peek_sink: out of memory\n");
			exit(1);
		}
		*v = p;
		*cap = c;
	}
	(*v)[(*n)++] = x;
}

static void on_data(mctx_t mctx, int sock, int side, event_t ev, filter_arg_t *arg)
{
	unsigned long long start = now_ns();
	(void)ev;
	(void)arg;
	callbacks++;
	for (;;) {
		ssize_t n = mtcp_peek(mctx, sock, side, scratch, sizeof scratch);
		peeks++;
		if (n > 0) {
			data_peeks++;
			bytes += (unsigned long long)n;
			push(&chunks, &nchunks, &cap_chunks, (unsigned)n);
		} else if (n < -1) {
			gaps++;
			gap_bytes += (unsigned long long)(-n);
		} else {
			if (errno != ENODATA) {
				errors++;
				if (!first_errno)
					first_errno = errno;
			}
			break;
		}
	}
	peek_ns += now_ns() - start;
	push(&group_ends, &ngroups, &cap_groups, (unsigned)nchunks);
}

static int cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return (x > y) - (x < y);
}

/* The memcpy baseline: the same chunk sizes from a 256 KiB source, one clock pair per group. */
static unsigned long long memcpy_grouped(const char *src)
{
	unsigned long long total = 0;
	size_t at = 0, g, off = 0;
	for (g = 0; g < ngroups; g++) {
		unsigned long long start = now_ns();
		for (; at < group_ends[g]; at++) {
			size_t len = chunks[at];
			if (off + len > SOURCE)
				off = 0;
			memcpy(scratch, src + off, len);
			off += len;
		}
		__asm__ __volatile__("" : : "r"(scratch) : "memory");
		total += now_ns() - start;
	}
	return total;
}

int main(int argc, char **argv)
{
	const char *name = "c-peek-sink", *filter = NULL;
	union monitor_filter ft;
	mctx_t mctx;
	struct mtcp_conf conf;
	char *src;
	int i, sock;
	unsigned long long grouped;
	unsigned chunk_p50, chunk_max;
	double chunk_mean;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--control") && i + 1 < argc)
			setenv("MOS_CONTROL", argv[++i], 1);
		else if (!strcmp(argv[i], "--name") && i + 1 < argc)
			name = argv[++i];
		else if (!strcmp(argv[i], "--filter") && i + 1 < argc)
			filter = argv[++i];
		else {
			fprintf(stderr, "usage: c_peek_sink --control PATH [--name NAME] [--filter EXPR]\n");
			return 2;
		}
	}
	setenv("MOS_PACKETS", "0", 1);
	if (!getenv("MOS_ATTACH_WAIT"))
		setenv("MOS_ATTACH_WAIT", "20", 1);
	if (mtcp_init(NULL))
		return 1;
	mtcp_getconf(&conf);
	conf.num_cores = 1;
	if (mtcp_setconf(&conf))
		return 1;
	if (!(mctx = mtcp_create_context(0)))
		return 1;
	if ((sock = mtcp_socket(mctx, AF_INET, MOS_SOCK_MONITOR_STREAM, 0)) < 0)
		return 1;
	if (filter) {
		memset(&ft, 0, sizeof ft);
		ft.stream_syn_filter = (char *)filter;
		if (mtcp_bind_monitor_filter(mctx, sock, &ft))
			return 1;
	}
	if (mtcp_register_callback(mctx, sock, MOS_ON_CONN_NEW_DATA, MOS_NULL, on_data))
		return 1;
	mtcp_app_join(mctx);
	mtcp_destroy();

	src = malloc(SOURCE);
	if (!src)
		return 1;
	for (i = 0; i < SOURCE; i++)
		src[i] = (char)(i * 131);
	grouped = memcpy_grouped(src);
	{
		unsigned *sorted = malloc((nchunks ? nchunks : 1) * sizeof *sorted);
		if (!sorted)
			return 1;
		memcpy(sorted, chunks, nchunks * sizeof *sorted);
		qsort(sorted, nchunks, sizeof *sorted, cmp_unsigned);
		chunk_p50 = nchunks ? sorted[(nchunks - 1) * 50 / 100] : 0;
		chunk_max = nchunks ? sorted[nchunks - 1] : 0;
		chunk_mean = nchunks ? (double)bytes / (double)nchunks : 0.0;
		free(sorted);
	}
	printf("{\"name\":\"%s\",\"filter\":", name);
	if (filter)
		printf("\"%s\"", filter);
	else
		printf("null");
	printf(",\"events\":%llu,\"callbacks\":%llu,"
	       "\"bytes\":%llu,\"peeks\":%llu,\"data_peeks\":%llu,"
	       "\"gaps\":%llu,\"gap_bytes\":%llu,\"errors\":%llu,\"first_errno\":%d,"
	       "\"peek_ns\":%llu,\"memcpy_grouped_ns\":%llu,\"memcpy_flat_ns\":%llu,"
	       "\"chunk_mean\":%.1f,\"chunk_p50\":%u,\"chunk_max\":%u}\n",
	       callbacks, callbacks, bytes, peeks, data_peeks, gaps, gap_bytes, errors, first_errno,
	       peek_ns, grouped, grouped, chunk_mean, chunk_p50, chunk_max);
	free(src);
	free(chunks);
	free(group_ends);
	return errors ? 1 : 0;
}
