package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// networkName is what Attachment.Network says a sandbox joined.
const networkName = "p2p"

// sandboxIf is the sandbox's end of its link.
const sandboxIf = "eth0"

// p2pNetwork connects each sandbox by a veth pair of its own: no bridge,
// no iptables, no CNI. The host end keeps the first address of a /31,
// the sandbox's eth0 the second and a default route through the host
// end. It is safe for concurrent use, also by several processes sharing
// its state directory.
type p2pNetwork struct {
	state    stateDir
	defaults map[string]string // settings when an Attach gives none
	log      *slog.Logger
	ports    publisher
}

func newP2PNetwork(stateDirPath string, defaults map[string]string, log *slog.Logger) *p2pNetwork {
	return &p2pNetwork{state: stateDir{dir: stateDirPath}, defaults: defaults, log: log, ports: publisher{log: log}}
}

// PublishesPorts announces capability "ports": ports.go.
func (n *p2pNetwork) PublishesPorts() bool { return true }

// Attach makes req.ID's link.
func (n *p2pNetwork) Attach(ctx context.Context, req *plugin.AttachRequest) (*plugin.AttachResult, error) {
	if err := checkID(req.ID); err != nil {
		return nil, err
	}
	if err := checkPorts(req.Ports); err != nil {
		return nil, err
	}
	if req.DNS != nil {
		return nil, fmt.Errorf("DNS settings per sandbox (use the dns setting): %w", plugin.ErrUnsupported)
	}
	set, err := parseSettings(n.defaults, req.Options)
	if err != nil {
		return nil, err
	}
	if err := checkHostWide(); err != nil {
		return nil, fmt.Errorf("refusing to attach: %w", err)
	}
	ns, err := openNetns(req.NetnsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	l, err := n.reserve(ctx, req.ID, set.subnet)
	if err != nil {
		return nil, err
	}
	err = n.connect(ctx, l, ns, set.forward)
	if err == nil {
		err = n.publish(l, req.Ports)
	}
	if err != nil {
		n.ports.unpublish(l.ID)
		if uerr := n.remove(l.ID); uerr != nil {
			n.log.Error("undo failed attach", "id", l.ID, "err", uerr)
		}
		return nil, fmt.Errorf("sandbox %s: %w", req.ID, err)
	}
	n.log.Debug("attached", "id", l.ID, "interface", l.HostIf, "address", l.sandboxAddr())
	gw := l.hostAddr()
	return &plugin.AttachResult{
		Attachment: netplug.Attachment{
			Network:   networkName,
			Interface: sandboxIf,
			IPs:       []netip.Prefix{netip.PrefixFrom(l.sandboxAddr(), l.Block.Bits())},
			Gateway:   gw,
			Ports:     l.Ports,
			DNS:       set.dns,
		},
		Routes: []plugin.Route{{Destination: netip.MustParsePrefix("0.0.0.0/0"), Gateway: gw}},
	}, nil
}

// reserve allocates id's /31 and writes its record, under the state
// lock: the subnet is checked against the host's routes and the host
// end's name must be free.
func (n *p2pNetwork) reserve(ctx context.Context, id string, subnet netip.Prefix) (*link, error) {
	unlock, err := n.state.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(n.state.path(id)); err == nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, plugin.ErrExists)
	}
	n.state.sweepTemps()
	links, err := n.state.all()
	if err != nil {
		return nil, err
	}
	r, err := overlappingRoute(subnet, links)
	if err != nil {
		return nil, err
	}
	if r != nil {
		return nil, fmt.Errorf("subnet %s overlaps the host's route %s: choose another with the %s setting: %w",
			subnet, describeRoute(r), settingSubnet, plugin.ErrInvalid)
	}
	block, err := freeBlock(subnet, links)
	if err != nil {
		return nil, err
	}
	l := &link{ID: id, HostIf: hostIfName(id), Block: block}
	var notFound netlink.LinkNotFoundError
	switch _, err := netlink.LinkByName(l.HostIf); {
	case err == nil:
		return nil, fmt.Errorf("sandbox %s: interface %s exists and is not in this plugin's records: %w", id, l.HostIf, plugin.ErrExists)
	case !errors.As(err, &notFound):
		return nil, fmt.Errorf("sandbox %s: look for interface %s: %w", id, l.HostIf, err)
	}
	if err := n.state.write(l); err != nil {
		return nil, err
	}
	return l, nil
}

// publish publishes ports for l's sandbox and records them, with their
// owner, so that a restarted plugin publishes them again.
func (n *p2pNetwork) publish(l *link, ports []netplug.PortMapping) error {
	if len(ports) == 0 {
		return nil
	}
	me, err := parentOwner()
	if err != nil {
		return fmt.Errorf("publish ports: %w", err)
	}
	if l.Ports, err = n.ports.publish(l.ID, l.sandboxAddr(), ports); err != nil {
		return err
	}
	l.Owner = &me
	// Under the lock: writes outside it would race sweepTemps, and a
	// Detach that removed the record meanwhile (berth's undo of an
	// Attach whose call it cancelled, while this one went on) would
	// leave the listeners and a record of a link that is gone.
	unlock, err := n.state.lock()
	if err != nil {
		n.ports.unpublish(l.ID)
		return err
	}
	defer unlock()
	if _, err := os.Lstat(n.state.path(l.ID)); err != nil {
		n.ports.unpublish(l.ID)
		return fmt.Errorf("publish ports: detached meanwhile: %w", err)
	}
	if err := n.state.write(l); err != nil {
		n.ports.unpublish(l.ID)
		return err
	}
	return nil
}

// freeBlock returns the lowest /31 of subnet that no link has, skipping
// the first, whose address would be the subnet's own.
func freeBlock(subnet netip.Prefix, links []*link) (netip.Prefix, error) {
	used := make(map[netip.Addr]bool, len(links))
	for _, l := range links {
		used[l.Block.Addr()] = true
	}
	a := subnet.Addr().Next().Next()
	for ; subnet.Contains(a); a = a.Next().Next() {
		if !used[a] {
			return netip.PrefixFrom(a, 31), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("subnet %s is full: no free /31 left", subnet)
}

// connect makes l's veth pair with its sandbox end in ns, and numbers
// and routes both ends. The host end is hardened before it comes up.
func (n *p2pNetwork) connect(ctx context.Context, l *link, ns netns.NsHandle, forward bool) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: l.HostIf},
		PeerName:      sandboxIf,
		PeerNamespace: netlink.NsFd(ns),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			// Not ErrExists, which would tell berth the id is attached.
			return fmt.Errorf("make veth pair %s: the sandbox's namespace has an %s already: %w", l.HostIf, sandboxIf, plugin.ErrInvalid)
		}
		return fmt.Errorf("make veth pair %s: %w", l.HostIf, err)
	}
	if err := setSysctls(l.HostIf, forward); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	host, err := netlink.LinkByName(l.HostIf)
	if err != nil {
		return err
	}
	onlyTo := l.hostAddr()
	if forward {
		onlyTo = netip.Addr{}
	}
	if err := addSourceFilter(host, l.sandboxAddr(), onlyTo); err != nil {
		return err
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipNet(l.hostAddr(), l.Block.Bits())}); err != nil {
		return fmt.Errorf("address host end: %w", err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("host end up: %w", err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in the sandbox's namespace: %w", err)
	}
	defer h.Close()
	peer, err := h.LinkByName(sandboxIf)
	if err != nil {
		return fmt.Errorf("sandbox end: %w", err)
	}
	if err := h.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(l.sandboxAddr(), l.Block.Bits())}); err != nil {
		return fmt.Errorf("address sandbox end: %w", err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		return fmt.Errorf("sandbox end up: %w", err)
	}
	def := &netlink.Route{
		LinkIndex: peer.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        l.hostAddr().AsSlice(),
	}
	if err := h.RouteAdd(def); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// Detach removes id's link, from the id alone: deleting the host end
// deletes the pair, and if the sandbox's namespace is gone the kernel has
// deleted both already.
func (n *p2pNetwork) Detach(ctx context.Context, id, _ string) error {
	if !validID.MatchString(id) {
		// Never attached, so unknown; and never used as a file name.
		return fmt.Errorf("sandbox id %q: not a valid id: %w", id, plugin.ErrNotFound)
	}
	// This process's listeners go whatever the record says: another
	// plugin process sharing the directory may have detached the id. And
	// they go last too, after the record, which a concurrent Attach's
	// publish checks for before it keeps its listeners.
	n.ports.unpublish(id)
	defer n.ports.unpublish(id)
	if _, err := os.Lstat(n.state.path(id)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sandbox %s: %w", id, plugin.ErrNotFound)
	}
	if err := n.remove(id); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	n.log.Debug("detached", "id", id)
	return nil
}

// remove deletes id's host end, if there is one, and then its record.
// The name is derived from the id and recorded before the link was made,
// so it is this plugin's; it must still be a veth all the same.
func (n *p2pNetwork) remove(id string) error {
	name := hostIfName(id)
	host, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		return fmt.Errorf("find %s: %w", name, err)
	case host.Type() != "veth":
		return fmt.Errorf("interface %s is a %s, not this plugin's veth: left alone", name, host.Type())
	default:
		if err := netlink.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete %s: %w", name, err)
		}
	}
	// Under the lock, so that a concurrent publish sees the record
	// either before it goes or not at all.
	unlock, err := n.state.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return n.state.remove(id)
}

// List names the sandboxes with a link, or with a record of one being
// made or removed when a plugin was killed.
func (n *p2pNetwork) List(context.Context) ([]string, error) {
	return n.state.ids()
}

// openNetns opens the namespace at path, which must be a network
// namespace and not the plugin's own: rewiring the host's would cut it
// off.
func openNetns(path string) (netns.NsHandle, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	ns := netns.NsHandle(fd)
	var fsst unix.Statfs_t
	if err := unix.Fstatfs(fd, &fsst); err != nil || fsst.Type != unix.NSFS_MAGIC {
		ns.Close()
		return -1, fmt.Errorf("%s is not a namespace: %w", path, plugin.ErrInvalid)
	}
	if t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		ns.Close()
		return -1, fmt.Errorf("%s is not a network namespace: %w", path, plugin.ErrInvalid)
	}
	self, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		ns.Close()
		return -1, err
	}
	defer self.Close()
	if ns.Equal(self) {
		ns.Close()
		return -1, fmt.Errorf("%s is the plugin's own network namespace: %w", path, plugin.ErrInvalid)
	}
	return ns, nil
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

func describeRoute(r *netlink.Route) string {
	s := r.Dst.String()
	if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
		s += " dev " + l.Attrs().Name
	}
	if r.Table != unix.RT_TABLE_MAIN {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s
}
