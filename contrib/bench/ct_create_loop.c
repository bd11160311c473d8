/*
 * Create baseline: N UDP conntrack entries, one netlink request per entry through
 * libnetfilter_conntrack (nfct_query NFCT_Q_CREATE, each waiting for its ack), the
 * way an ordinary C program without batching creates entries. Prints entries per
 * second to stdout.
 *
 * The tuples are the ones contrib/bench/run.sh generates for ctsync, for entry i:
 *   198.51.100.(1 + i % 250) -> 203.0.113.(1 + i / 250 % 250),
 *   sport 1024 + i / 62500, dport 53, timeout 600
 * so both fills insert the same table (unique up to 250 * 250 * 64512 entries).
 *
 * Usage:  ct_create_loop N
 * Build:  cc -O2 ct_create_loop.c $(pkg-config --cflags --libs libnetfilter_conntrack) -o ct_create_loop
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>

int main(int argc, char **argv)
{
	char *end = NULL;
	long n = argc == 2 ? strtol(argv[1], &end, 10) : 0;
	if (n <= 0 || *end != '\0' || n > 250L * 250 * 64512) {
		fprintf(stderr, "usage: ct_create_loop N   (1 <= N <= 4032000000)\n");
		return 2;
	}
	struct nfct_handle *h = nfct_open(CONNTRACK, 0);
	if (h == NULL) {
		fprintf(stderr, "ct_create_loop: nfct_open: %s\n", strerror(errno));
		return 1;
	}
	struct nf_conntrack *ct = nfct_new();
	if (ct == NULL) {
		fprintf(stderr, "ct_create_loop: nfct_new: %s\n", strerror(errno));
		return 1;
	}

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		uint32_t src = 0xC6336400u | (uint32_t)(1 + i % 250);		/* 198.51.100.0/24 */
		uint32_t dst = 0xCB007100u | (uint32_t)(1 + i / 250 % 250);	/* 203.0.113.0/24 */
		nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET);
		nfct_set_attr_u32(ct, ATTR_IPV4_SRC, htonl(src));
		nfct_set_attr_u32(ct, ATTR_IPV4_DST, htonl(dst));
		nfct_set_attr_u8(ct, ATTR_L4PROTO, IPPROTO_UDP);
		nfct_set_attr_u16(ct, ATTR_PORT_SRC, htons((uint16_t)(1024 + i / 62500)));
		nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(53));
		/* The kernel wants a reply tuple too: the mirror of the original. */
		nfct_setobjopt(ct, NFCT_SOPT_SETUP_REPLY);
		nfct_set_attr_u32(ct, ATTR_TIMEOUT, 600);
		if (nfct_query(h, NFCT_Q_CREATE, ct) < 0) {
			fprintf(stderr, "ct_create_loop: create %ld of %ld: %s\n", i + 1, n, strerror(errno));
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);

	double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%.0f\n", (double)n / seconds);
	nfct_destroy(ct);
	nfct_close(h);
	return 0;
}
