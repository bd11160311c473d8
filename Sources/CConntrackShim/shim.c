#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be defined (Package.swift sets it)"
#endif
#include "CConntrackShim.h"
#include <sys/socket.h>
#include <linux/netlink.h>
#include <string.h>
#include <unistd.h>

const int CConntrackShim_SOL_NETLINK = SOL_NETLINK;
const int CConntrackShim_NETLINK_CAP_ACK = NETLINK_CAP_ACK;
const int CConntrackShim_NETLINK_EXT_ACK = NETLINK_EXT_ACK;
const int CConntrackShim_NETLINK_ADD_MEMBERSHIP = NETLINK_ADD_MEMBERSHIP;
const int CConntrackShim_NETLINK_NETFILTER = NETLINK_NETFILTER;
const int CConntrackShim_SO_RCVBUFFORCE = SO_RCVBUFFORCE;
const int CConntrackShim_SO_SNDBUFFORCE = SO_SNDBUFFORCE;

_Static_assert(sizeof(struct nlmsghdr) == 16, "nlmsghdr layout");

