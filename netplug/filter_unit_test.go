package netplug

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// The port and the addresses a filter allows come from the bridge
// plugin's result: the host's end of the veth (not the bridge), the
// sandbox's MAC address and its IPv4 addresses.
func TestPortFilterOf(t *testing.T) {
	result := func(ifaces ...*current.Interface) *current.Result {
		return &current.Result{CNIVersion: "1.0.0", Interfaces: ifaces}
	}
	bridge := &current.Interface{Name: "berth0", Mac: "02:00:00:00:00:01"}
	veth := &current.Interface{Name: "veth1234abcd", Mac: "02:00:00:00:00:02"}
	eth0 := &current.Interface{Name: "eth0", Mac: "02:00:00:00:00:03", Sandbox: "/proc/1/ns/net"}
	ips := []netip.Prefix{netip.MustParsePrefix("10.1.0.2/24"), netip.MustParsePrefix("fd00::2/64")}

	f, portMAC, err := portFilterOf(result(bridge, veth, eth0), "berth0", ips)
	if err != nil {
		t.Fatal(err)
	}
	if f.Port != "veth1234abcd" || f.MAC.String() != "02:00:00:00:00:03" || portMAC.String() != "02:00:00:00:00:02" {
		t.Errorf("port %s, sandbox MAC %s, port MAC %s", f.Port, f.MAC, portMAC)
	}
	if !slices.Equal(f.IPs, []netip.Addr{netip.MustParseAddr("10.1.0.2")}) {
		t.Errorf("IPs %v, want the IPv4 one only", f.IPs)
	}
	if n := len(f.rules()); n != 5 {
		t.Errorf("%d rules, want 5", n)
	}

	for _, c := range []struct {
		name string
		res  *current.Result
		ips  []netip.Prefix
		want string
	}{
		{"no veth", result(bridge, eth0), ips, "no veth"},
		{"no sandbox interface", result(bridge, veth), ips, "no veth with a MAC"},
		{"bad port name", result(bridge, &current.Interface{Name: "veth x\n"}, eth0), ips, "no veth"},
		{"bad MAC", result(bridge, veth, &current.Interface{Name: "eth0", Mac: "nope", Sandbox: "x"}), ips, "sandbox interface eth0"},
		{"no IPv4", result(bridge, veth, eth0), ips[1:], "no IPv4 address"},
	} {
		if _, _, err := portFilterOf(c.res, "berth0", c.ips); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

func TestIfKey(t *testing.T) {
	k := ifKey("veth0")
	if len(k) != 16 || string(k[:5]) != "veth0" || slices.ContainsFunc(k[5:], func(b byte) bool { return b != 0 }) {
		t.Errorf("ifKey = %q", k)
	}
}
