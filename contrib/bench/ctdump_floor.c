/*
 * The raw netlink dump floor: one IPCTNL_MSG_CT_GET dump request, then every
 * datagram received until NLMSG_DONE, counting messages and parsing nothing
 * else. No conntrack dump tool can beat this on the same machine and table,
 * so the benchmark reports the other tools as ratios against it.
 *
 * Usage:  ctdump_floor          (prints "N messages" to stderr)
 * Build:  cc -O2 ctdump_floor.c $(pkg-config --cflags --libs libmnl) -o ctdump_floor
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

static int fail(const char *what, int err)
{
	fprintf(stderr, "ctdump_floor: %s: %s\n", what, strerror(err));
	return 1;
}

int main(void)
{
	/* 64 KiB: large enough for any datagram the kernel sends in a dump. */
	static char buf[64 * 1024];

	struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);
	if (nl == NULL)
		return fail("netlink socket", errno);
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0)
		return fail("bind", errno);

	/* A big receive buffer so the kernel never waits on us; FORCE bypasses rmem_max. */
	int rcvbuf = 8 << 20;
	if (setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		return fail("SO_RCVBUFFORCE", errno);

	struct nlmsghdr *req = mnl_nlmsg_put_header(buf);
	req->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
	req->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req->nlmsg_seq = (unsigned int)time(NULL);
	struct nfgenmsg *nfg = mnl_nlmsg_put_extra_header(req, sizeof(*nfg));
	nfg->nfgen_family = AF_UNSPEC;	/* every family */
	nfg->version = NFNETLINK_V0;
	nfg->res_id = 0;
	if (mnl_socket_sendto(nl, req, req->nlmsg_len) < 0)
		return fail("send", errno);

	unsigned long messages = 0;
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (n < 0)
			return fail("receive", errno);
		if (n == 0)
			return fail("receive", ECONNRESET);
		int len = (int)n;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; mnl_nlmsg_ok(h, len);
		     h = mnl_nlmsg_next(h, &len)) {
			if (h->nlmsg_type == NLMSG_DONE)
				goto done;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = mnl_nlmsg_get_payload(h);
				return fail("kernel", e->error < 0 ? -e->error : EPROTO);
			}
			messages++;
		}
	}
done:
	mnl_socket_close(nl);
	fprintf(stderr, "%lu messages\n", messages);
	return 0;
}
