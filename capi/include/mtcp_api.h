/*
 * mtcp_api.h: the context, configuration and socket calls of mOS's API, as libmos (the mos
 * C library) provides them. Written for mos from mOS's manual pages; the names, types and
 * values are mOS's, so that a monitoring program written for mOS compiles unchanged.
 * docs/C-API.md lists where mos behaves differently.
 */
#ifndef MOS_MTCP_API_H
#define MOS_MTCP_API_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef UNUSED
#define UNUSED(x) (void)(x)
#endif

#ifndef INPORT_ANY
#define INPORT_ANY ((uint16_t)0)
#endif

typedef unsigned char byte;

/* A per-core context: mtcp_create_context() gives one per cpu number. Only cpu is public;
 * the library keeps the rest behind it. */
struct mtcp_context {
	int cpu;
};
typedef struct mtcp_context *mctx_t;

/* What mtcp_register_signal() takes. */
typedef void (*mtcp_sighandler_t)(int);

/* Socket types (mtcp_socket's type). mos implements the two monitoring ones. */
enum socket_type {
	MOS_SOCK_UNUSED = 0,
	MOS_SOCK_STREAM_LISTEN = 1,
	MOS_SOCK_PROXY_LISTEN = 2,
	MOS_SOCK_MONITOR_STREAM = 3,
	MOS_SOCK_STREAM = 4,
	MOS_SOCK_PROXY = 5,
	MOS_SOCK_MONITOR_STREAM_ACTIVE = 6,
	MOS_SOCK_MONITOR_RAW = 7,
	MOS_SOCK_EPOLL = 8,
	MOS_SOCK_PIPE = 9
};

#define APP_NAME_LEN 40
#define MOS_APP 20
#define MOS_APP_ARGC 20

/* The configuration mtcp_getconf() reads and mtcp_setconf() changes. */
struct mtcp_conf {
	int num_cores;       /* contexts the program runs: the sensor's workers are shared among them */
	int max_concurrency; /* connections one sensor worker tracks at once */
	uint64_t cpu_mask;   /* bit i set for each context i */

	int max_num_buffers; /* stream buffers one sensor worker has */
	int rcvbuf_size;     /* the most bytes one side of a connection holds */
	int sndbuf_size;     /* not used by a monitor (0) */

	int tcp_timewait;    /* seconds (0: a monitor follows no TIME_WAIT) */
	int tcp_timeout;     /* idle seconds before a connection ends; -1: never */

	uint64_t app_cpu_mask[MOS_APP];
	char *app_argv[MOS_APP][MOS_APP_ARGC];
	int app_argc[MOS_APP];
	int num_app;
};

int mtcp_init(const char *config_file);
int mtcp_destroy(void);
int mtcp_getconf(struct mtcp_conf *conf);
int mtcp_setconf(const struct mtcp_conf *conf);
int mtcp_core_affinitize(int cpu);
mctx_t mtcp_create_context(int cpu);
int mtcp_destroy_context(mctx_t mctx);
mtcp_sighandler_t mtcp_register_signal(int signum, mtcp_sighandler_t handler);

int mtcp_socket(mctx_t mctx, int domain, int type, int protocol);
int mtcp_close(mctx_t mctx, int sock);
int mtcp_getsockopt(mctx_t mctx, int sock, int level, int optname, void *optval,
		    socklen_t *optlen);
int mtcp_setsockopt(mctx_t mctx, int sock, int level, int optname, const void *optval,
		    socklen_t optlen);

#ifdef __cplusplus
}
#endif

#endif /* MOS_MTCP_API_H */
