package plugin

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/netplug"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// A network plugin is a root process berth does not control, so what it
// says it did is checked before anything of it is used: the answer names
// the namespace berth gave it, its strings parse as what they claim to be,
// nothing in it can break out of the line of /etc/hosts or resolv.conf it
// ends up in, and the interface and addresses it reports are there in the
// namespace. These are the bounds on an answer.
const (
	maxAddresses   = 64
	maxRoutes      = 256
	maxHosts       = 1024
	maxHostNames   = 16        // per hosts entry
	maxHostsBytes  = 128 << 10 // the names of all entries together
	maxNameservers = 8
	maxSearch      = 32
	maxDNSOptions  = 32
)

var (
	// networkNamePattern is what a plugin may call its network: the name
	// is written into the sandbox's /etc/hosts, in a comment line.
	networkNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)
	// hostNamePattern is a name in /etc/hosts or a search domain, by the
	// rule sandbox.Options' names follow: the letters, digits, '-', '.'
	// and '_' of host names, first a letter, digit or '_'. Nothing that
	// could end a line or start another field.
	hostNamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
	// dnsOptionPattern is one resolv.conf option, such as "ndots:2" or
	// "trust-ad": a word of printable characters that does not start a
	// comment, so that it stays one option on the options line.
	dnsOptionPattern = regexp.MustCompile(`^[!-"$-:<-~][!-~]{0,63}$`)
)

// validHostName reports whether s may be written into /etc/hosts as a name.
func validHostName(s string) bool {
	return len(s) <= 253 && hostNamePattern.MatchString(s)
}

// validInterfaceName reports whether the kernel could name a link s.
func validInterfaceName(s string) bool {
	if s == "" || len(s) >= unix.IFNAMSIZ || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || r == '/' || r == ':' {
			return false
		}
	}
	return true
}

// checkAnswer turns a plugin's answer to req into an Attachment, or says
// what is wrong with it (an error wrapping ErrRefused). It does not look
// into the namespace: verifyInNetns does.
func checkAnswer(req *pb.AttachRequest, r *pb.AttachResponse) (*netplug.Attachment, error) {
	a, err := parseAnswer(req, r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return a, nil
}

func parseAnswer(req *pb.AttachRequest, r *pb.AttachResponse) (*netplug.Attachment, error) {
	if r.GetNetnsIno() != req.GetNetnsIno() {
		return nil, fmt.Errorf("the answer is about namespace inode %d, not %d, the one it was given", r.GetNetnsIno(), req.GetNetnsIno())
	}
	a := &netplug.Attachment{Network: r.GetNetwork(), Interface: r.GetInterface()}
	if a.Network != "" && !networkNamePattern.MatchString(a.Network) {
		return nil, fmt.Errorf("network name %s is not a name", clip.Quote(a.Network))
	}
	if !validInterfaceName(a.Interface) || a.Interface == "lo" {
		return nil, fmt.Errorf("interface %s is not a name the sandbox's interface can have", clip.Quote(a.Interface))
	}
	if len(r.GetAddresses()) > maxAddresses {
		return nil, fmt.Errorf("%d addresses, more than %d", len(r.GetAddresses()), maxAddresses)
	}
	for _, s := range r.GetAddresses() {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("address %s is not an address with a prefix length", clip.Quote(s))
		}
		if err := usableAddr(p.Addr()); err != nil {
			return nil, fmt.Errorf("address %s: %w", p, err)
		}
		a.IPs = append(a.IPs, p)
	}
	if g := r.GetGateway(); g != "" {
		addr, err := parseHostAddr(g)
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		a.Gateway = addr
	}
	if err := checkRoutes(r.GetRoutes()); err != nil {
		return nil, err
	}
	ports, err := checkPorts(req.GetPorts(), r.GetPorts())
	if err != nil {
		return nil, err
	}
	a.Ports = ports
	if a.Hosts, err = checkHosts(r.GetHosts()); err != nil {
		return nil, err
	}
	if a.DNS, err = checkDNS(r.GetDns()); err != nil {
		return nil, err
	}
	return a, nil
}

// usableAddr refuses the addresses an interface of a sandbox cannot
// meaningfully have, or that would make berth's own uses of the answer
// (hosts file, published ports) point somewhere else than the sandbox.
func usableAddr(a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return errors.New("has a zone")
	case a.IsUnspecified():
		return errors.New("is unspecified")
	case a.IsLoopback():
		return errors.New("is a loopback address")
	case a.IsMulticast():
		return errors.New("is a multicast address")
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return errors.New("is the broadcast address")
	}
	return nil
}

// parseHostAddr parses a single address, such as a gateway's, that must
// be usable.
func parseHostAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s is not an address", clip.Quote(s))
	}
	if err := usableAddr(a); err != nil {
		return netip.Addr{}, fmt.Errorf("%s %w", a, err)
	}
	return a, nil
}

func checkRoutes(routes []*pb.Route) error {
	if len(routes) > maxRoutes {
		return fmt.Errorf("%d routes, more than %d", len(routes), maxRoutes)
	}
	for _, rt := range routes {
		p, err := netip.ParsePrefix(rt.GetDestination())
		if err != nil || p != p.Masked() {
			return fmt.Errorf("route destination %s is not a prefix", clip.Quote(rt.GetDestination()))
		}
		if g := rt.GetGateway(); g != "" {
			if _, err := parseHostAddr(g); err != nil {
				return fmt.Errorf("route to %s: gateway %w", p, err)
			}
		}
	}
	return nil
}

// checkPorts matches the published ports to those asked for: the same
// ports, each once, with the container port, protocol and host address
// asked, and the host port asked or, where 0 was asked, one chosen.
func checkPorts(asked, got []*pb.PortMapping) ([]netplug.PortMapping, error) {
	if len(got) != len(asked) {
		return nil, fmt.Errorf("%d ports published, %d asked for", len(got), len(asked))
	}
	// Fixed host ports first, so that a chosen one cannot take the place
	// of an asked-for one with the same container port.
	used := make([]bool, len(asked))
	out := make([]netplug.PortMapping, len(got))
	matched := make([]bool, len(got))
	for _, anyPort := range []bool{false, true} {
		for i, g := range got {
			if matched[i] {
				continue
			}
			for j, a := range asked {
				if used[j] || (a.GetHostPort() == 0) != anyPort || !samePort(a, g) {
					continue
				}
				used[j], matched[i] = true, true
				out[i] = netplug.PortMapping{HostIP: a.GetHostIp(), HostPort: uint16(g.GetHostPort()),
					ContainerPort: uint16(g.GetContainerPort()), Protocol: g.GetProtocol()}
				break
			}
		}
	}
	for i, g := range got {
		if !matched[i] {
			return nil, fmt.Errorf("published port %s:%d->%d/%s was not asked for", clip.Quote(g.GetHostIp()),
				g.GetHostPort(), g.GetContainerPort(), clip.Quote(g.GetProtocol()))
		}
	}
	return out, nil
}

// samePort reports whether g publishes what a asks for. a is canonical
// (portRequest); g's host address may be spelled another way.
func samePort(a, g *pb.PortMapping) bool {
	ip, err := canonicalHostIP(g.GetHostIp())
	if err != nil || ip != a.GetHostIp() || g.GetContainerPort() != a.GetContainerPort() || g.GetProtocol() != a.GetProtocol() {
		return false
	}
	if g.GetHostPort() == 0 || g.GetHostPort() > 65535 {
		return false
	}
	return a.GetHostPort() == 0 || a.GetHostPort() == g.GetHostPort()
}

// checkHosts parses the hosts entries: each name goes into the sandbox's
// /etc/hosts, so it must be a host name and nothing more.
func checkHosts(hosts []*pb.HostEntry) ([]netplug.HostEntry, error) {
	if len(hosts) > maxHosts {
		return nil, fmt.Errorf("%d hosts entries, more than %d", len(hosts), maxHosts)
	}
	var out []netplug.HostEntry
	size := 0
	for _, h := range hosts {
		ip, err := netip.ParseAddr(h.GetIp())
		if err != nil || ip.Zone() != "" || ip.IsUnspecified() {
			return nil, fmt.Errorf("hosts entry address %s is not an address", clip.Quote(h.GetIp()))
		}
		if len(h.GetNames()) > maxHostNames {
			return nil, fmt.Errorf("hosts entry for %s has %d names, more than %d", ip, len(h.GetNames()), maxHostNames)
		}
		for _, n := range h.GetNames() {
			if !validHostName(n) {
				return nil, fmt.Errorf("hosts entry name %s is not a host name", clip.Quote(n))
			}
			size += len(n) + 1
		}
		if size > maxHostsBytes {
			return nil, fmt.Errorf("hosts entries' names exceed %d bytes", maxHostsBytes)
		}
		out = append(out, netplug.HostEntry{IP: ip, Names: h.GetNames()})
	}
	return out, nil
}

// checkDNS parses the resolver settings, which berth writes into the
// sandbox's resolv.conf, one setting per line.
func checkDNS(d *pb.DNSConfig) (netplug.DNSConfig, error) {
	var out netplug.DNSConfig
	if d == nil {
		return out, nil
	}
	switch {
	case len(d.GetNameservers()) > maxNameservers:
		return out, fmt.Errorf("%d nameservers, more than %d", len(d.GetNameservers()), maxNameservers)
	case len(d.GetSearch()) > maxSearch:
		return out, fmt.Errorf("%d search domains, more than %d", len(d.GetSearch()), maxSearch)
	case len(d.GetOptions()) > maxDNSOptions:
		return out, fmt.Errorf("%d resolver options, more than %d", len(d.GetOptions()), maxDNSOptions)
	}
	for _, s := range d.GetNameservers() {
		// netip takes any bytes after '%' as the zone, and writes them
		// back: a link-local nameserver's zone must be an interface name.
		a, err := netip.ParseAddr(s)
		if err != nil || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" && !validInterfaceName(a.Zone()) {
			return out, fmt.Errorf("nameserver %s is not an address", clip.Quote(s))
		}
		out.Nameservers = append(out.Nameservers, a)
	}
	for _, s := range d.GetSearch() {
		// "." is the root domain: systemd-resolved writes "search ." for
		// no search domain, and a plugin may pass the host's on.
		if s != "." && !validHostName(s) {
			return out, fmt.Errorf("search domain %s is not a domain name", clip.Quote(s))
		}
		out.Search = append(out.Search, s)
	}
	for _, s := range d.GetOptions() {
		if !dnsOptionPattern.MatchString(s) {
			return out, fmt.Errorf("resolver option %s is not an option", clip.Quote(s))
		}
		out.Options = append(out.Options, s)
	}
	return out, nil
}

// verifyInNetns checks, in the namespace itself, that the interface a
// names is there and has a's addresses: the kernel's word, not the
// plugin's.
func verifyInNetns(ns *netnsFile, a *netplug.Attachment) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("look into the namespace: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(a.Interface)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return fmt.Errorf("%w: interface %s is not in the namespace", ErrRefused, clip.Quote(a.Interface))
		}
		return fmt.Errorf("look for interface %s: %w", clip.Quote(a.Interface), err)
	}
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list the addresses of %s: %w", clip.Quote(a.Interface), err)
	}
	for _, want := range a.IPs {
		if !hasAddr(have, want) {
			return fmt.Errorf("%w: address %s is not on %s", ErrRefused, want, clip.Quote(a.Interface))
		}
	}
	return nil
}

func hasAddr(have []netlink.Addr, want netip.Prefix) bool {
	for _, h := range have {
		if h.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(h.IPNet.IP)
		ones, _ := h.IPNet.Mask.Size()
		if ok && ip.Unmap() == want.Addr() && ones == want.Bits() {
			return true
		}
	}
	return false
}

// checkIDs refuses a list of attached ids with one that is no sandbox id.
func checkIDs(ids []string) error {
	for _, id := range ids {
		if !keyRE.MatchString(id) {
			return fmt.Errorf("%w: listed id %s is not a sandbox id", ErrRefused, clip.Quote(id))
		}
	}
	return nil
}
