package netplug

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
)

const (
	defaultResolvConf = "/etc/resolv.conf"
	// systemd-resolved's list of the real upstream servers, which its stub
	// at 127.0.0.53 forwards to; a sandbox cannot reach the stub.
	resolvedResolvConf = "/run/systemd/resolve/resolv.conf"
)

// parseResolvConf reads the name servers, search domains and options of a
// resolv.conf. Malformed lines are skipped, as the resolver skips them.
func parseResolvConf(data []byte) DNSConfig {
	var c DNSConfig
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) > 1 {
				if a, err := netip.ParseAddr(f[1]); err == nil {
					c.Nameservers = append(c.Nameservers, a)
				}
			}
		case "search", "domain":
			// The last of search and domain wins, as in resolv.conf(5).
			c.Search = slices.Clone(f[1:])
		case "options":
			c.Options = append(c.Options, f[1:]...)
		}
	}
	return c
}

// withoutLoopback drops the name servers a sandbox in its own network
// namespace cannot reach: the host's loopback ones (127.0.0.0/8, ::1)
// would be the sandbox's own loopback.
func (c DNSConfig) withoutLoopback() DNSConfig {
	c = c.clone()
	c.Nameservers = slices.DeleteFunc(c.Nameservers, netip.Addr.IsLoopback)
	return c
}

func (c DNSConfig) clone() DNSConfig {
	return DNSConfig{
		Nameservers: slices.Clone(c.Nameservers),
		Search:      slices.Clone(c.Search),
		Options:     slices.Clone(c.Options),
	}
}

// hostDNS is the host's resolver configuration as a sandbox with its own
// network namespace can use it. When the host resolves through a local
// stub only (systemd-resolved), the stub's upstream servers are used
// instead. With no usable server the list stays empty: netplug never
// makes up an outside server to send a sandbox's queries to.
func hostDNS(path string) (DNSConfig, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return DNSConfig{}, nil
	}
	if err != nil {
		return DNSConfig{}, fmt.Errorf("read the host's resolver configuration: %w", err)
	}
	c := parseResolvConf(data)
	usable := c.withoutLoopback()
	if len(usable.Nameservers) == 0 && len(c.Nameservers) > 0 && path == defaultResolvConf {
		if data, err := os.ReadFile(resolvedResolvConf); err == nil {
			up := parseResolvConf(data).withoutLoopback()
			usable.Nameservers = up.Nameservers
		}
	}
	return usable, nil
}

// ResolvConf returns c as the content of /etc/resolv.conf.
func (c DNSConfig) ResolvConf() []byte {
	var b bytes.Buffer
	b.WriteString("# written by berth\n")
	if len(c.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.Search, " "))
	}
	for _, ns := range c.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(c.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(c.Options, " "))
	}
	return b.Bytes()
}

// HostsFile returns the content of /etc/hosts for a sandbox with the
// attachment a (nil for none) and the given names (its hostname and
// aliases): localhost, the sandbox's names on its first address, and the
// other sandboxes on its named network. Without an address of its own the
// sandbox's names go on 127.0.1.1, as Debian does, so that they still
// resolve.
func HostsFile(a *Attachment, names ...string) []byte {
	var b bytes.Buffer
	b.WriteString("# written by berth\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("ff02::1\tip6-allnodes\n")
	b.WriteString("ff02::2\tip6-allrouters\n")
	self := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "" })
	var selfIP netip.Addr
	if a != nil && len(a.IPs) > 0 {
		selfIP = a.IPs[0].Addr()
	}
	if len(self) > 0 {
		if !selfIP.IsValid() {
			selfIP = netip.AddrFrom4([4]byte{127, 0, 1, 1})
		}
		fmt.Fprintf(&b, "%s\t%s\n", selfIP, strings.Join(self, " "))
	}
	if a != nil && len(a.Hosts) > 0 {
		fmt.Fprintf(&b, "# sandboxes on network %s\n", a.Network)
		for _, h := range a.Hosts {
			if len(h.Names) > 0 {
				fmt.Fprintf(&b, "%s\t%s\n", h.IP, strings.Join(h.Names, " "))
			}
		}
	}
	return b.Bytes()
}
