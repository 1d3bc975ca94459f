package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// subnet holds the point-to-point /31s, one per sandbox: the host's end
// the even address, the sandbox's the odd one.
var subnet = netip.MustParsePrefix("10.247.0.0/16")

// aliasPrefix marks the host ends this plugin made, and names their ids.
const aliasPrefix = "berth-testnetwork:"

// veths makes and removes the pairs. Its state is the host's links
// themselves, so that a restarted plugin knows what the last one made.
type veths struct {
	mu sync.Mutex // held while choosing an address and making a pair
}

// hostName is the host end's name for sandbox id.
func hostName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "btn" + hex.EncodeToString(sum[:5])
}

// link is what attach made.
type link struct {
	hostIP, sandboxIP netip.Prefix
	ifname            string
}

// attach makes id's pair with the sandbox's end in the namespace at
// nsPath named "eth0" (or, with inHost, left in the host's namespace
// under another name).
func (v *veths) attach(id, nsPath string, inHost bool) (*link, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	name := hostName(id)
	if _, err := netlink.LinkByName(name); err == nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, plugin.ErrExists)
	}
	host, sbox, err := v.freeSlot(id)
	if err != nil {
		return nil, err
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("namespace: %w", err)
	}
	defer ns.Close()
	l := &link{hostIP: host, sandboxIP: sbox, ifname: "eth0"}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if inHost {
		l.ifname = "btp" + name[3:]
		veth.PeerName, veth.PeerNamespace = l.ifname, nil
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("make veth %s: %w", name, err)
	}
	if err := v.configure(id, name, ns, l, inHost); err != nil {
		if hl, lerr := netlink.LinkByName(name); lerr == nil {
			netlink.LinkDel(hl)
		}
		return nil, err
	}
	return l, nil
}

func (v *veths) configure(id, name string, ns netns.NsHandle, l *link, inHost bool) error {
	hl, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetAlias(hl, aliasPrefix+id); err != nil {
		return err
	}
	if err := netlink.AddrAdd(hl, &netlink.Addr{IPNet: ipNet(l.hostIP)}); err != nil {
		return fmt.Errorf("host address: %w", err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return err
	}
	if inHost {
		return nil
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	sl, err := h.LinkByName(l.ifname)
	if err != nil {
		return err
	}
	if err := h.AddrAdd(sl, &netlink.Addr{IPNet: ipNet(l.sandboxIP)}); err != nil {
		return fmt.Errorf("sandbox address: %w", err)
	}
	if err := h.LinkSetUp(sl); err != nil {
		return err
	}
	return h.RouteAdd(&netlink.Route{LinkIndex: sl.Attrs().Index, Gw: l.hostIP.Addr().AsSlice()})
}

// freeSlot chooses id's /31: where its hash points, or the next free.
func (v *veths) freeSlot(id string) (host, sbox netip.Prefix, err error) {
	used := map[netip.Addr]bool{}
	links, err := netlink.LinkList()
	if err != nil {
		return host, sbox, err
	}
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Alias, aliasPrefix) {
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
				used[ip] = true
			}
		}
	}
	sum := sha256.Sum256([]byte(id))
	slots := uint32(1) << (32 - subnet.Bits() - 1)
	base := binary.BigEndian.Uint32(subnet.Addr().AsSlice())
	for i := range slots {
		slot := (binary.BigEndian.Uint32(sum[:4]) + i) % slots
		if slot == 0 {
			continue
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], base+2*slot)
		h := netip.AddrFrom4(b)
		if !used[h] {
			return netip.PrefixFrom(h, 31), netip.PrefixFrom(h.Next(), 31), nil
		}
	}
	return host, sbox, fmt.Errorf("no free address in %s", subnet)
}

// detach removes id's pair; the sandbox's end goes with the host's.
func (v *veths) detach(id string) error {
	l, err := netlink.LinkByName(hostName(id))
	if err != nil {
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			return fmt.Errorf("sandbox %s: %w", id, plugin.ErrNotFound)
		}
		return err
	}
	if l.Attrs().Alias != aliasPrefix+id {
		return fmt.Errorf("sandbox %s: link %s is not mine: %w", id, hostName(id), plugin.ErrNotFound)
	}
	return netlink.LinkDel(l)
}

func (v *veths) list() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, l := range links {
		if id, ok := strings.CutPrefix(l.Attrs().Alias, aliasPrefix); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// sdkNetwork serves through the SDK: plugin.ServeNetwork.
type sdkNetwork struct {
	v    *veths
	caps bool // announce ports and dns
}

func (n *sdkNetwork) PublishesPorts() bool { return n.caps }
func (n *sdkNetwork) ConfiguresDNS() bool  { return n.caps }

func (n *sdkNetwork) Attach(ctx context.Context, req *plugin.AttachRequest) (*plugin.AttachResult, error) {
	lie := req.Options["lie"]
	l, err := n.v.attach(req.ID, req.NetnsPath, lie == "otherns")
	if err != nil {
		return nil, err
	}
	switch lie {
	case "hang":
		select {}
	case "block":
		if f, err := os.OpenFile(req.Options["ready"], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
			fmt.Fprint(f, os.Getpid())
			f.Close()
			select {}
		}
	}
	return &plugin.AttachResult{Attachment: result(req, l)}, nil
}

// result is what the sandbox got: its end, a name for the host's, the
// ports as asked (this plugin publishes nothing really: it tests the
// protocol, not port forwarding), and the DNS settings as asked.
func result(req *plugin.AttachRequest, l *link) netplug.Attachment {
	a := netplug.Attachment{
		Network:   "testnetwork",
		Interface: l.ifname,
		IPs:       []netip.Prefix{l.sandboxIP},
		Gateway:   l.hostIP.Addr(),
		Hosts:     []netplug.HostEntry{{IP: l.hostIP.Addr(), Names: []string{"gateway.test", "host-" + req.ID}}},
		DNS:       netplug.DNSConfig{Nameservers: []netip.Addr{l.hostIP.Addr()}},
	}
	if req.DNS != nil {
		a.DNS = *req.DNS
	}
	for i, p := range req.Ports {
		if p.HostPort == 0 {
			p.HostPort = uint16(40000 + i)
		}
		a.Ports = append(a.Ports, p)
	}
	return a
}

func (n *sdkNetwork) Detach(ctx context.Context, id, netnsPath string) error { return n.v.detach(id) }
func (n *sdkNetwork) List(ctx context.Context) ([]string, error)             { return n.v.list() }
