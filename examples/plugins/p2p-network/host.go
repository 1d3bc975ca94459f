package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostIfPrefix begins the name of every host end this plugin makes.
const hostIfPrefix = "bp"

// hostIfName derives the host end's name from the sandbox id: "bp" and
// 13 hex digits of its SHA-256, 15 characters, the kernel's limit. The
// same id always gives the same name, so Detach needs nothing but the id;
// 52 bits make a clash of two ids' names negligible, and Attach refuses a
// name in use rather than take it over.
func hostIfName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hostIfPrefix + hex.EncodeToString(sum[:])[:unix.IFNAMSIZ-1-len(hostIfPrefix)]
}

// A sysctl is one setting of the host end's, written before the link is
// up so that no packet ever meets it unset.
type sysctl struct {
	path  string // under /proc/sys/net, with %s for the interface
	value string
	// optional: missing on this kernel (IPv6 off) is no error.
	optional bool
}

// hostEndSysctls harden the host end against what its sandbox sends.
// They are the interface's own settings and go with it: nothing
// host-wide is changed.
func hostEndSysctls(forward bool) []sysctl {
	sysctls := []sysctl{
		// Strict reverse-path filtering: a packet whose source is not the
		// sandbox's address (the only one routed back through this
		// interface) is dropped, so a sandbox cannot pose as another or
		// as any other host. The source filter (srcfilter.go) does the
		// same where net.ipv4.conf.all.rp_filter makes this loose.
		{path: "ipv4/conf/%s/rp_filter", value: "1"},
		// The host does not answer ARP for addresses that are not its
		// own, nor treat 127.0.0.0/8 as routable from here; new
		// interfaces copy these from conf/default, so they are set
		// rather than assumed.
		{path: "ipv4/conf/%s/proxy_arp", value: "0"},
		{path: "ipv4/conf/%s/route_localnet", value: "0"},
		{path: "ipv4/conf/%s/accept_local", value: "0"},
		// Nor answer ARP for its addresses on other interfaces, which
		// would tell the sandbox what they are (the kernel applies the
		// larger of this and conf/all's).
		{path: "ipv4/conf/%s/arp_ignore", value: "1"},
		// Nor follow a route the sandbox writes into a packet's options.
		{path: "ipv4/conf/%s/accept_source_route", value: "0"},
		// The sandbox cannot redirect the host's routes.
		{path: "ipv4/conf/%s/accept_redirects", value: "0"},
		{path: "ipv4/conf/%s/send_redirects", value: "0"},
		// No IPv6 on the host end: otherwise a sandbox could send router
		// advertisements and give the host a default route through
		// itself, and reach the host's link-local addresses.
		{path: "ipv6/conf/%s/disable_ipv6", value: "1", optional: true},
	}
	if !forward {
		// Packets from the sandbox to other networks are not routed on
		// (the source filter sees to it whatever becomes of this). With
		// forward on, the interface keeps the host's own setting: the
		// plugin does not make a host forward that does not.
		sysctls = append(sysctls, sysctl{path: "ipv4/conf/%s/forwarding", value: "0"})
	}
	return sysctls
}

// setSysctls writes the host end's settings.
func setSysctls(ifname string, forward bool) error {
	for _, s := range hostEndSysctls(forward) {
		p := "/proc/sys/net/" + fmt.Sprintf(s.path, ifname)
		err := os.WriteFile(p, []byte(s.value), 0)
		if s.optional && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", strings.TrimPrefix(p, "/proc/sys/"), err)
		}
	}
	return nil
}

// checkHostWide refuses hosts whose host-wide settings would undo the
// host end's: the kernel ORs route_localnet of "all" with the
// interface's, so with it on a sandbox could reach the host's loopback
// services, as in CVE-2020-8558.
func checkHostWide() error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/route_localnet")
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != "0" {
		return errors.New("net.ipv4.conf.all.route_localnet is on: a sandbox could reach the host's 127.0.0.1")
	}
	return nil
}

// overlappingRoute returns a host route, in any table, that overlaps
// subnet and is not one of ours (a host end's connected /31 or its
// address's local route), or nil. The default route overlaps everything
// and is not a clash.
func overlappingRoute(subnet netip.Prefix, ours []*link) (*netlink.Route, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
next:
	for i := range routes {
		r := &routes[i]
		if r.Dst == nil {
			continue
		}
		dst, ok := prefixOf(r.Dst)
		if !ok || dst.Bits() == 0 || !dst.Overlaps(subnet) {
			continue
		}
		for _, l := range ours {
			if dst.Bits() >= l.Block.Bits() && l.Block.Contains(dst.Addr()) {
				continue next
			}
		}
		return r, nil
	}
	return nil, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), ok
}
