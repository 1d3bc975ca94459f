package main

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// DefaultSubnet is where sandboxes' links are numbered from unless the
// subnet setting says otherwise: next to berth's own bridges
// (10.213.0.0/16 and 10.214.0.0/16), away from Docker's 172.17.0.0/16,
// podman's 10.88.0.0/16 and Kubernetes' usual ranges.
const DefaultSubnet = "10.215.0.0/16"

// Settings keys, as berth's plugin.Options.Settings (sent with every
// Attach) or as environment variables BERTH_P2P_<KEY> name them.
const (
	settingSubnet  = "subnet"
	settingForward = "forward"
	settingDNS     = "dns"
)

// settings are an Attach's settings, parsed.
type settings struct {
	// subnet is the pool the link's /31 is taken from.
	subnet netip.Prefix
	// forward lets the host route the sandbox's packets on to other
	// networks, if the host forwards at all; off, the sandbox reaches
	// the host's own addresses only.
	forward bool
	// dns is what the sandbox's resolv.conf says.
	dns netplug.DNSConfig
}

// envDefaults reads the settings' defaults from the environment
// (BERTH_P2P_SUBNET, BERTH_P2P_FORWARD, BERTH_P2P_DNS), for hosts that
// start the plugin without settings, such as the berth command.
func envDefaults() map[string]string {
	d := map[string]string{}
	for _, k := range []string{settingSubnet, settingForward, settingDNS} {
		if v, ok := os.LookupEnv("BERTH_P2P_" + strings.ToUpper(k)); ok {
			d[k] = v
		}
	}
	return d
}

// parseSettings parses opts over defaults. A key it does not know is an
// error, so that a misspelt setting is not silently ignored.
func parseSettings(defaults, opts map[string]string) (*settings, error) {
	merged := map[string]string{settingSubnet: DefaultSubnet}
	for k, v := range defaults {
		merged[k] = v
	}
	for k, v := range opts {
		merged[k] = v
	}
	s := &settings{}
	for k, v := range merged {
		var err error
		switch k {
		case settingSubnet:
			s.subnet, err = parseSubnet(v)
		case settingForward:
			s.forward, err = parseBool(v)
		case settingDNS:
			s.dns, err = parseDNS(v)
		default:
			err = fmt.Errorf("unknown setting (known: %s, %s, %s)", settingSubnet, settingForward, settingDNS)
		}
		if err != nil {
			return nil, fmt.Errorf("setting %s=%q: %w: %w", k, v, err, plugin.ErrInvalid)
		}
	}
	return s, nil
}

// parseSubnet accepts an IPv4 prefix that holds at least two /31 links
// and is none of the special ranges a sandbox's address cannot be in.
func parseSubnet(v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	switch {
	case !p.Addr().Is4():
		return netip.Prefix{}, fmt.Errorf("not IPv4")
	case p != p.Masked():
		return netip.Prefix{}, fmt.Errorf("host bits set (the subnet is %s)", p.Masked())
	case p.Bits() > 30:
		return netip.Prefix{}, fmt.Errorf("smaller than a /30")
	case p.Bits() < 8:
		return netip.Prefix{}, fmt.Errorf("larger than a /8")
	}
	for _, special := range specialRanges {
		if p.Overlaps(special) {
			return netip.Prefix{}, fmt.Errorf("overlaps %s, which is reserved", special)
		}
	}
	return p, nil
}

// specialRanges are where no sandbox's address may be: "this network",
// loopback (packets to or from it are martians), link-local (cloud
// metadata services live there), multicast and the rest of class E.
var specialRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "true", "on", "yes":
		return true, nil
	case "0", "false", "off", "no", "":
		return false, nil
	}
	return false, fmt.Errorf("want on or off")
}

// parseDNS reads comma-separated nameserver addresses.
func parseDNS(v string) (netplug.DNSConfig, error) {
	var d netplug.DNSConfig
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return d, err
		}
		if !slices.Contains(d.Nameservers, a) {
			d.Nameservers = append(d.Nameservers, a)
		}
	}
	return d, nil
}
