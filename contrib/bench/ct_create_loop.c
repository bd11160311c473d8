/*
 * Baseline for batched creates: one conntrack entry per netlink request through
 * libnetfilter_conntrack (nfct_query NFCT_Q_CREATE), the way a C program that
 * does not batch creates entries. Prints entries per second.
 * Usage: ct_create_loop N   (UDP entries 198.51.100.x -> 203.0.113.y, unique tuples)
 * Build: cc -O2 ct_create_loop.c $(pkg-config --cflags --libs libnetfilter_conntrack) -o ct_create_loop
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
	long n = argc > 1 ? atol(argv[1]) : 0;
	if (n <= 0) {
		fprintf(stderr, "usage: ct_create_loop N\n");
		return 2;
	}
	struct nfct_handle *h = nfct_open(CONNTRACK, 0);
	struct nf_conntrack *ct = nfct_new();
	if (h == NULL || ct == NULL) {
		fprintf(stderr, "ct_create_loop: %s\n", strerror(errno));
		return 1;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long failed = 0;
	for (long i = 0; i < n; i++) {
		char src[32], dst[32];
		/* Documentation addresses only; unique tuples up to 250 x 250 x 64511 entries. */
		snprintf(src, sizeof(src), "198.51.100.%ld", 1 + i % 250);
		snprintf(dst, sizeof(dst), "203.0.113.%ld", 1 + (i / 250) % 250);
		nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET);
		nfct_set_attr_u32(ct, ATTR_IPV4_SRC, inet_addr(src));
		nfct_set_attr_u32(ct, ATTR_IPV4_DST, inet_addr(dst));
		nfct_set_attr_u8(ct, ATTR_L4PROTO, IPPROTO_UDP);
		nfct_set_attr_u16(ct, ATTR_PORT_SRC, htons(1024 + i / 62500));
		nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(53));
		nfct_setobjopt(ct, NFCT_SOPT_SETUP_REPLY);
		nfct_set_attr_u32(ct, ATTR_TIMEOUT, 600);
		if (nfct_query(h, NFCT_Q_CREATE, ct) < 0)
			failed++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%.0f\n", (n - failed) / s);
	if (failed)
		fprintf(stderr, "ct_create_loop: %ld creates failed\n", failed);
	nfct_destroy(ct);
	nfct_close(h);
	return failed ? 1 : 0;
}
