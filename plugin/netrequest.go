package plugin

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/netplug"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// attachRequest builds the request for sandbox id's namespace ns, refusing
// what is malformed, and what the plugin info describes did not announce
// it does, before the plugin sees it. The hosts file options stay
// berth's.
func attachRequest(id, netnsPath string, ns *netnsFile, opts *netplug.AttachOptions, info Info, settings map[string]string) (*pb.AttachRequest, error) {
	if !keyRE.MatchString(id) {
		return nil, fmt.Errorf("sandbox id %s: %w", clip.Quote(id), ErrInvalid)
	}
	req := &pb.AttachRequest{Id: id, NetnsPath: netnsPath, NetnsDev: ns.dev, NetnsIno: ns.ino, Options: settings}
	if opts == nil {
		return req, nil
	}
	for _, n := range append([]string{opts.Hostname}, opts.Aliases...) {
		if n != "" && !validHostName(n) {
			return nil, fmt.Errorf("host name %s: %w", clip.Quote(n), ErrInvalid)
		}
	}
	req.Hostname, req.Aliases = opts.Hostname, opts.Aliases
	if len(opts.Ports) > 0 {
		if !info.Has(CapPorts) {
			return nil, fmt.Errorf("plugin %s does not publish ports: %w", filepath.Base(info.Path), ErrUnsupported)
		}
		for _, p := range opts.Ports {
			m, err := portRequest(p)
			if err != nil {
				return nil, err
			}
			req.Ports = append(req.Ports, m)
		}
	}
	if opts.DNS != nil {
		if !info.Has(CapDNS) {
			return nil, fmt.Errorf("plugin %s does not configure DNS: %w", filepath.Base(info.Path), ErrUnsupported)
		}
		req.Dns = dnsToPB(opts.DNS)
	}
	return req, nil
}

// portRequest checks a port to publish and spells it for the wire as
// netplug would: the protocol in lower case and always named, the host
// address canonical and "" for all of them.
func portRequest(p netplug.PortMapping) (*pb.PortMapping, error) {
	proto := strings.ToLower(p.Protocol)
	if proto == "" {
		proto = "tcp"
	}
	switch {
	case proto != "tcp" && proto != "udp":
		return nil, fmt.Errorf("port protocol %s: %w", clip.Quote(p.Protocol), ErrInvalid)
	case p.ContainerPort == 0:
		return nil, fmt.Errorf("port mapping without a container port: %w", ErrInvalid)
	}
	ip, err := canonicalHostIP(p.HostIP)
	if err != nil {
		return nil, fmt.Errorf("port host IP %s: %w", clip.Quote(p.HostIP), ErrInvalid)
	}
	return &pb.PortMapping{HostIp: ip, HostPort: uint32(p.HostPort), ContainerPort: uint32(p.ContainerPort), Protocol: proto}, nil
}

// canonicalHostIP spells a published port's host address one way, so that
// the answer compares with the request: "" (or an unspecified address)
// for all of them, otherwise the address without an IPv4-mapped prefix.
func canonicalHostIP(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("%s is not an address", clip.Quote(s))
	}
	if a = a.Unmap(); a.IsUnspecified() {
		return "", nil
	}
	return a.String(), nil
}

func dnsToPB(d *netplug.DNSConfig) *pb.DNSConfig {
	out := &pb.DNSConfig{Search: d.Search, Options: d.Options}
	for _, a := range d.Nameservers {
		out.Nameservers = append(out.Nameservers, a.String())
	}
	return out
}
