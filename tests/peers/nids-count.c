/*
 * nids-count: the libnids peer of the benchmark (issue 18).
 *
 * Reassembles every TCP connection of a capture file with libnids and counts the bytes it
 * delivers in order to both sides, keeping none of them; then prints one line:
 *
 *   nids-count: conns=N bytes=B evicted=E warnings=W
 *
 * conns: connections libnids followed (it follows one only after seeing its handshake);
 * bytes: stream bytes delivered, both directions; evicted: established connections libnids
 * dropped because its table was full (should be 0, else raise -s); warnings: other conditions
 * libnids reported (bad headers, out-of-order queues it pruned, ...).
 *
 * Checksums: libnids is told to verify none (every source address matches one
 * NIDS_DONT_CHKSUM rule), so that captures taken on the sending host, whose checksums the NIC
 * was to fill in, are reassembled. mos-sensor verifies every checksum; this peer does less work.
 *
 * usage: nids-count [-s STREAMS] CAPTURE.pcap
 * build: cc -O2 -o nids-count tests/peers/nids-count.c -lnids   (libnids-dev)
 */
#define _DEFAULT_SOURCE /* u_int, u_char in the pcap and libnids headers, getopt */
#include <sys/types.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <nids.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long long conns, bytes, evicted, warnings;

static void on_tcp(struct tcp_stream *s, void **unused)
{
	(void)unused;
	switch (s->nids_state) {
	case NIDS_JUST_EST:
		/* Ask for the data of both directions. */
		s->client.collect++;
		s->server.collect++;
		conns++;
		break;
	case NIDS_DATA:
		/* Only the half that received data has count_new set; libnids drops what the
		 * callback leaves unread by default, so nothing is kept. */
		bytes += (unsigned long long)s->client.count_new + (unsigned long long)s->server.count_new;
		break;
	default:
		break;
	}
}

/* Replaces nids_syslog (which writes to syslog for every event): counts instead. */
static void on_warning(int type, int err, struct ip *iph, void *data)
{
	(void)iph;
	(void)data;
	if (type == NIDS_WARN_TCP && err == NIDS_WARN_TCP_TOOMUCH)
		evicted++;
	else
		warnings++;
}

static void usage(void)
{
	fprintf(stderr, "usage: nids-count [-s STREAMS (default 32768: libnids follows 3/4 of it "
			"at once)] CAPTURE.pcap\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static struct nids_chksum_ctl no_checksums = { 0, 0, NIDS_DONT_CHKSUM, 0 };
	int streams = 32768, opt;

	while ((opt = getopt(argc, argv, "s:h")) != -1) {
		if (opt != 's' || (streams = atoi(optarg)) <= 0)
			usage();
	}
	if (optind != argc - 1)
		usage();
	nids_params.filename = argv[optind];
	nids_params.device = NULL;
	nids_params.n_tcp_streams = streams;
	nids_params.n_hosts = 4096;      /* IP defragmentation table */
	nids_params.scan_num_hosts = 0;  /* no port scan detection */
	nids_params.syslog = on_warning;
	nids_params.promisc = 0;
	if (!nids_init()) {
		fprintf(stderr, "nids-count: %s: %s\n", argv[optind], nids_errbuf);
		return 1;
	}
	/* netaddr 0 under mask 0 matches every source address. */
	nids_register_chksum_ctl(&no_checksums, 1);
	nids_register_tcp(on_tcp);
	nids_run(); /* reads the whole file, then calls nids_exit() */
	printf("nids-count: conns=%llu bytes=%llu evicted=%llu warnings=%llu\n", conns, bytes,
	       evicted, warnings);
	return 0;
}
