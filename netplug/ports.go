package netplug

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// normalizePorts checks the mappings asked for and fills in defaults:
// protocol tcp, canonical host addresses.
func normalizePorts(ports []PortMapping) ([]PortMapping, error) {
	out := make([]PortMapping, 0, len(ports))
	for _, p := range ports {
		p.Protocol = strings.ToLower(p.Protocol)
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			return nil, fmt.Errorf("%w: port protocol %q: want tcp or udp", ErrInvalid, p.Protocol)
		}
		if p.ContainerPort == 0 {
			return nil, fmt.Errorf("%w: port mapping without a container port", ErrInvalid)
		}
		if p.HostIP != "" {
			// IPv6 host addresses would need IPv6 in the sandbox.
			a, err := netip.ParseAddr(p.HostIP)
			switch a = a.Unmap(); {
			case err != nil || !a.Is4():
				return nil, fmt.Errorf("%w: host address %q: want an IPv4 address of the host", ErrInvalid, p.HostIP)
			case a.IsUnspecified():
				p.HostIP = ""
			default:
				p.HostIP = a.String()
			}
		}
		for _, q := range out {
			if p.HostPort != 0 && conflicts(p, q) {
				return nil, fmt.Errorf("%w: %s asked for twice", ErrPortInUse, p)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// ParsePortMapping parses a published port as `docker run -p` takes it:
// [[hostIP:][hostPort]:]containerPort[/protocol]. Without a host port, or
// with an empty one (127.0.0.1::80), any free port is taken.
func ParsePortMapping(s string) (PortMapping, error) {
	var p PortMapping
	rest, proto, ok := strings.Cut(s, "/")
	if ok {
		p.Protocol = strings.ToLower(proto)
	}
	// The host address may be IPv6 in brackets, with colons of its own.
	var parts []string
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]:")
		if end < 0 {
			return p, fmt.Errorf("%w: port mapping %q", ErrInvalid, s)
		}
		parts = append([]string{rest[1:end]}, strings.Split(rest[end+2:], ":")...)
	} else {
		parts = strings.Split(rest, ":")
	}
	port := func(f string) (uint16, error) {
		if f == "" {
			return 0, nil
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%w: port mapping %q: bad port %q", ErrInvalid, s, f)
		}
		return uint16(n), nil
	}
	var err error
	switch len(parts) {
	case 3:
		p.HostIP = parts[0]
		parts = parts[1:]
		fallthrough
	case 2:
		if p.HostPort, err = port(parts[0]); err != nil {
			return p, err
		}
		parts = parts[1:]
		fallthrough
	case 1:
		if p.ContainerPort, err = port(parts[0]); err != nil {
			return p, err
		}
	default:
		return p, fmt.Errorf("%w: port mapping %q", ErrInvalid, s)
	}
	norm, err := normalizePorts([]PortMapping{p})
	if err != nil {
		return p, fmt.Errorf("port mapping %q: %w", s, err)
	}
	return norm[0], nil
}

// String returns the mapping as `docker run -p` takes it.
func (p PortMapping) String() string {
	s := fmt.Sprintf("%d:%d/%s", p.HostPort, p.ContainerPort, p.Protocol)
	if p.HostIP != "" {
		s = p.HostIP + ":" + s
	}
	return s
}

// conflicts reports whether two mappings would take the same host port.
func conflicts(a, b PortMapping) bool {
	return a.Protocol == b.Protocol && a.HostPort == b.HostPort &&
		(a.HostIP == b.HostIP || a.HostIP == "" || b.HostIP == "")
}

// claim gives the ports of an attachment their host ports and creates its
// record, under the ports lock, so that no two attachments of this RunDir
// take the same port.
func (n *Networks) claim(ctx context.Context, rec *record, ports []PortMapping) error {
	if len(ports) == 0 {
		return n.writeRecord(rec, rec.CNIName, true)
	}
	l, err := lockExclusive(ctx, n.lockPath("ports"))
	if err != nil {
		return err
	}
	defer l.Unlock()
	recs, err := n.records("")
	if err != nil {
		return err
	}
	var taken []PortMapping
	for _, r := range recs {
		taken = append(taken, r.Ports...)
	}
	for i := range ports {
		p := &ports[i]
		if p.HostPort == 0 {
			if p.HostPort, err = pickPort(ctx, *p, taken); err != nil {
				return err
			}
		} else {
			for _, t := range taken {
				if conflicts(*p, t) {
					return fmt.Errorf("%w: %s is published by another sandbox", ErrPortInUse, p)
				}
			}
			if err := probePort(ctx, *p); err != nil {
				return err
			}
		}
		taken = append(taken, *p)
	}
	rec.Ports = ports
	return n.writeRecord(rec, rec.CNIName, true)
}

// pickPort finds a free host port by letting the kernel pick one and
// releasing it. Racy by nature: a host program may bind the port between
// this and the sandbox's first connection, and then its traffic goes to
// the sandbox (the port mapping's DNAT comes before the host's sockets).
// Docker avoids that by holding the port open in a proxy process; netplug
// holds no process per sandbox, and ports of other sandboxes of this
// RunDir are excluded exactly.
func pickPort(ctx context.Context, p PortMapping, taken []PortMapping) (uint16, error) {
	for range 100 {
		port, err := bindPort(ctx, p.Protocol, p.HostIP, 0)
		if err != nil {
			return 0, fmt.Errorf("pick a host port for %s: %w", p, err)
		}
		q := p
		q.HostPort = port
		if !anyConflict(q, taken) {
			return port, nil
		}
	}
	return 0, fmt.Errorf("%w: found no free host port for %s", ErrPortInUse, p)
}

func anyConflict(p PortMapping, taken []PortMapping) bool {
	for _, t := range taken {
		if conflicts(p, t) {
			return true
		}
	}
	return false
}

// probePort makes sure no host program has the port.
func probePort(ctx context.Context, p PortMapping) error {
	if _, err := bindPort(ctx, p.Protocol, p.HostIP, p.HostPort); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w: %s: a host program has it", ErrPortInUse, p)
		}
		return fmt.Errorf("%w: %s: %w", ErrInvalid, p, err)
	}
	return nil
}

// bindPort binds the port (0: any) on the host and releases it, returning
// the port bound.
func bindPort(ctx context.Context, proto, ip string, port uint16) (uint16, error) {
	addr := net.JoinHostPort(ip, strconv.Itoa(int(port)))
	var lc net.ListenConfig
	if proto == "udp" {
		c, err := lc.ListenPacket(ctx, "udp4", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
	}
	l, err := lc.Listen(ctx, "tcp4", addr)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port), nil
}
