/*
 * check.h: what the C test programs of libmos share: checks that print `FAIL ...` lines,
 * errno checks that print `errno LABEL NAME ok`, addresses as `ip:port` (IPv6 as
 * `[ip]:port`, as the sensor's flows.jsonl writes them) and a small SHA-1 for stream bytes.
 *
 * Include it first: it sets the POSIX feature level the programs use.
 */
#ifndef MOS_TEST_CHECK_H
#define MOS_TEST_CHECK_H

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <mos_api.h>

/* Checks that failed, from any thread. */
static volatile int check_failures_;

static inline int check_failures(void)
{
	return __sync_add_and_fetch(&check_failures_, 0);
}

static inline const char *errname(int e)
{
	switch (e) {
	case 0: return "0";
	case EACCES: return "EACCES";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	case EAGAIN: return "EAGAIN";
	case EBADF: return "EBADF";
	case ECONNREFUSED: return "ECONNREFUSED";
	case EFAULT: return "EFAULT";
	case EINVAL: return "EINVAL";
	case EIO: return "EIO";
	case EMFILE: return "EMFILE";
	case ENFILE: return "ENFILE";
	case ENODATA: return "ENODATA";
	case ENOENT: return "ENOENT";
	case ENOMEM: return "ENOMEM";
	case ENOPROTOOPT: return "ENOPROTOOPT";
	case ENOSYS: return "ENOSYS";
	case ENOTCONN: return "ENOTCONN";
	case ENOTSOCK: return "ENOTSOCK";
	case ENOTSUP: return "ENOTSUP";
	case EPERM: return "EPERM";
	case EPROTO: return "EPROTO";
	case ESOCKTNOSUPPORT: return "ESOCKTNOSUPPORT";
	case ETIMEDOUT: return "ETIMEDOUT";
	default: return "E?";
	}
}

static inline void fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	__sync_add_and_fetch(&check_failures_, 1);
	flockfile(stdout);
	printf("FAIL %s:%d: ", file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	funlockfile(stdout);
	fflush(stdout);
}

#define FAIL(...) fail_at(__FILE__, __LINE__, __VA_ARGS__)

/* Fails with the message unless cond holds. */
#define CHECK(cond, ...)                 \
	do {                                 \
		if (!(cond))                     \
			FAIL(__VA_ARGS__);           \
	} while (0)

/* Evaluates expr (an integer result) with errno cleared; unless it gives want_ret with errno
 * want_errno it fails, else prints `errno LABEL NAME ok` for the test to count. */
#define EXPECT_ERRNO(label, expr, want_ret, want_errno)                                      \
	do {                                                                                 \
		long r_;                                                                     \
		int e_;                                                                      \
		errno = 0;                                                                   \
		r_ = (long)(expr);                                                           \
		e_ = errno;                                                                  \
		if (r_ != (long)(want_ret) || e_ != (want_errno))                            \
			FAIL("%s: %s gave %ld errno %s, expected %ld errno %s", label, #expr, \
			     r_, errname(e_), (long)(want_ret), errname(want_errno));         \
		else                                                                         \
			printf("errno %s %s ok\n", label, errname(want_errno));              \
	} while (0)

/* The same for a call that returns a pointer: want NULL and errno. */
#define EXPECT_NULL_ERRNO(label, expr, want_errno)                                           \
	do {                                                                                 \
		const void *p_;                                                              \
		int e_;                                                                      \
		errno = 0;                                                                   \
		p_ = (const void *)(expr);                                                   \
		e_ = errno;                                                                  \
		if (p_ != NULL || e_ != (want_errno))                                        \
			FAIL("%s: %s gave %p errno %s, expected NULL errno %s", label, #expr, \
			     p_, errname(e_), errname(want_errno));                          \
		else                                                                         \
			printf("errno %s %s ok\n", label, errname(want_errno));              \
	} while (0)

/* `ip:port`, or `[ip]:port` for IPv6; `?` for another family. */
static inline void fmt_addr(const struct sockaddr *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
		snprintf(out, len, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
		snprintf(out, len, "[%s]:%u", ip, (unsigned)ntohs(s6->sin6_port));
	} else {
		snprintf(out, len, "?family=%d", (int)sa->sa_family);
	}
}

/* Client and server of a per-flow socket as `ip:port` strings; 0, or -1 with errno. */
static inline int peer_names(mctx_t mctx, int sock, char *cli, char *svr, size_t len)
{
	struct sockaddr_storage one;
	socklen_t olen = sizeof one;
	if (mtcp_getpeername(mctx, sock, (struct sockaddr *)(void *)&one, &olen, MOS_SIDE_CLI) != 0)
		return -1;
	fmt_addr((struct sockaddr *)(void *)&one, cli, len);
	olen = sizeof one;
	if (mtcp_getpeername(mctx, sock, (struct sockaddr *)(void *)&one, &olen, MOS_SIDE_SVR) != 0)
		return -1;
	fmt_addr((struct sockaddr *)(void *)&one, svr, len);
	return 0;
}

/* SHA-1 (FIPS 180-4), for comparing stream bytes with the sensor's dump files. */
struct sha1 {
	uint32_t h[5];
	uint64_t len;
	unsigned char buf[64];
	size_t used;
};

static inline uint32_t sha1_rol(uint32_t x, int n)
{
	return (x << n) | (x >> (32 - n));
}

static inline void sha1_block(struct sha1 *s, const unsigned char *p)
{
	uint32_t w[80], a, b, c, d, e, f, k, t;
	int i;
	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (i = 16; i < 80; i++)
		w[i] = sha1_rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
	for (i = 0; i < 80; i++) {
		if (i < 20)
			f = (b & c) | (~b & d), k = 0x5a827999u;
		else if (i < 40)
			f = b ^ c ^ d, k = 0x6ed9eba1u;
		else if (i < 60)
			f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdcu;
		else
			f = b ^ c ^ d, k = 0xca62c1d6u;
		t = sha1_rol(a, 5) + f + e + k + w[i];
		e = d, d = c, c = sha1_rol(b, 30), b = a, a = t;
	}
	s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e;
}

static inline void sha1_init(struct sha1 *s)
{
	s->h[0] = 0x67452301u, s->h[1] = 0xefcdab89u, s->h[2] = 0x98badcfeu;
	s->h[3] = 0x10325476u, s->h[4] = 0xc3d2e1f0u;
	s->len = 0, s->used = 0;
}

static inline void sha1_update(struct sha1 *s, const void *data, size_t n)
{
	const unsigned char *p = (const unsigned char *)data;
	s->len += n;
	while (n > 0) {
		size_t take = 64 - s->used;
		if (take > n)
			take = n;
		memcpy(s->buf + s->used, p, take);
		s->used += take, p += take, n -= take;
		if (s->used == 64) {
			sha1_block(s, s->buf);
			s->used = 0;
		}
	}
}

/* n zero bytes (bytes the stream lost, which the dump writes as zeros). */
static inline void sha1_zeros(struct sha1 *s, uint64_t n)
{
	static const unsigned char z[4096];
	while (n > 0) {
		size_t take = n > sizeof z ? sizeof z : (size_t)n;
		sha1_update(s, z, take);
		n -= take;
	}
}

/* The digest as 40 hex digits into out[41]; s is used up. */
static inline void sha1_hex(struct sha1 *s, char *out)
{
	uint64_t bits = s->len * 8;
	unsigned char pad = 0x80, len[8];
	int i;
	sha1_update(s, &pad, 1);
	pad = 0;
	while (s->used != 56)
		sha1_update(s, &pad, 1);
	for (i = 0; i < 8; i++)
		len[i] = (unsigned char)(bits >> (56 - 8 * i));
	sha1_update(s, len, 8);
	for (i = 0; i < 5; i++)
		snprintf(out + 8 * i, 9, "%08x", (unsigned)s->h[i]);
}

/* The last line of every program: `done failures=N`; the exit status. */
static inline int finish(void)
{
	int n = check_failures();
	printf("done failures=%d\n", n);
	fflush(stdout);
	return n == 0 ? 0 : 1;
}

/* Output line by line even into a file, so that nothing is lost if the program dies. */
static inline void setup_output(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
}

#endif /* MOS_TEST_CHECK_H */
