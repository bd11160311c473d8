#ifndef CCONNTRACK_SHIM_H
#define CCONNTRACK_SHIM_H
// Constants and macros from <linux/netlink.h> and <linux/netfilter/nfnetlink.h>
// that Swift cannot import (macros) or that Glibc's module does not export.
// Every symbol carries the CConntrackShim_ prefix.
#include <stdint.h>

extern const int CConntrackShim_SOL_NETLINK;
extern const int CConntrackShim_NETLINK_CAP_ACK;
extern const int CConntrackShim_NETLINK_EXT_ACK;
extern const int CConntrackShim_NETLINK_ADD_MEMBERSHIP;
extern const int CConntrackShim_NETLINK_NETFILTER;
extern const int CConntrackShim_SO_RCVBUFFORCE;
extern const int CConntrackShim_SO_SNDBUFFORCE;

#endif
