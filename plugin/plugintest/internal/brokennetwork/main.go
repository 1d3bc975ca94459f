// Command brokennetwork is a network plugin with one bug on request, for
// the conformance kit's own tests: the kit must fail it, with a message
// that names the bug. $BROKEN_FAULT chooses the bug:
//
//	keep-veth   Detach forgets the id but leaves its veth pair
//	unknown-ok  Detach of an unknown id succeeds
//	host-leak   Attach also makes a bridge on the host, kitbroken0, and
//	            never removes it
//	host-route  Attach also routes 192.0.2.77/32 (TEST-NET-1) to the
//	            host's lo, and never removes the route
//
// Otherwise it connects each sandbox with a veth pair and an address of
// 10.219.0.0/16 chosen from the id, without a gateway, and keeps one file
// per id in $BROKEN_ROOT.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	plugin.ServeNetwork(&network{root: os.Getenv("BROKEN_ROOT"), fault: os.Getenv("BROKEN_FAULT")})
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// leakedBridge and leakedRoute are what faults host-leak and host-route
// leave on the host.
const leakedBridge = "kitbroken0"

var leakedRoute = &net.IPNet{IP: net.IPv4(192, 0, 2, 77), Mask: net.CIDRMask(32, 32)}

type network struct{ root, fault string }

// names derives the host end's name, a temporary name for the sandbox's
// end, and the sandbox's address from id.
func names(id string) (host, peer string, addr netip.Prefix) {
	sum := sha256.Sum256([]byte(id))
	h := hex.EncodeToString(sum[:6])
	return "kb" + h, "kp" + h, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 219, sum[6], sum[7] | 1}), 16)
}

func (n *network) Attach(ctx context.Context, req *plugin.AttachRequest) (_ *plugin.AttachResult, err error) {
	if !idPattern.MatchString(req.ID) {
		return nil, plugin.ErrInvalid
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rec := filepath.Join(n.root, req.ID)
	f, err := os.OpenFile(rec, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%q: %w", req.ID, plugin.ErrExists)
	} else if err != nil {
		return nil, err
	}
	f.Close()
	host, peer, addr := names(req.ID)
	defer func() {
		if err != nil {
			if l, lerr := netlink.LinkByName(host); lerr == nil {
				netlink.LinkDel(l)
			}
			os.Remove(rec)
		}
	}()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: peer}); err != nil {
		return nil, fmt.Errorf("add veth %s: %w", host, err)
	}
	ns, err := netns.GetFromPath(req.NetnsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	p, err := netlink.LinkByName(peer)
	if err == nil {
		err = netlink.LinkSetNsFd(p, int(ns))
	}
	if err != nil {
		return nil, fmt.Errorf("move %s into the namespace: %w", peer, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByName(peer)
	if err == nil {
		err = h.LinkSetName(l, "eth0")
	}
	if err == nil {
		ipnet := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
		err = h.AddrAdd(l, &netlink.Addr{IPNet: ipnet})
	}
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return nil, fmt.Errorf("configure the sandbox's end: %w", err)
	}
	if hl, err := netlink.LinkByName(host); err == nil {
		netlink.LinkSetUp(hl)
	}
	switch n.fault {
	case "host-leak":
		netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: leakedBridge}})
	case "host-route":
		if lo, err := netlink.LinkByName("lo"); err == nil {
			netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: leakedRoute})
		}
	}
	res := &plugin.AttachResult{}
	res.Network, res.Interface = "broken", "eth0"
	res.IPs = []netip.Prefix{addr}
	return res, nil
}

func (n *network) Detach(ctx context.Context, id, _ string) error {
	if !idPattern.MatchString(id) {
		return plugin.ErrInvalid
	}
	rec := filepath.Join(n.root, id)
	if _, err := os.Stat(rec); err != nil {
		if n.fault == "unknown-ok" {
			return nil
		}
		return fmt.Errorf("%q: %w", id, plugin.ErrNotFound)
	}
	host, _, _ := names(id)
	if l, err := netlink.LinkByName(host); err == nil && n.fault != "keep-veth" {
		if err := netlink.LinkDel(l); err != nil {
			return err
		}
	}
	return os.Remove(rec)
}

func (n *network) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(n.root)
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	return ids, err
}
