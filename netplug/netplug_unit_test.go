package netplug

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseResolvConf(t *testing.T) {
	got := parseResolvConf([]byte(`# comment
; also a comment
nameserver 127.0.0.53
nameserver 192.0.2.1
nameserver ::1
nameserver 2001:db8::1
nameserver not-an-address
domain first.test
search a.test b.test
options ndots:5 edns0
options timeout:1
`))
	want := DNSConfig{
		Nameservers: []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::1")},
		Search:      []string{"a.test", "b.test"},
		Options:     []string{"ndots:5", "edns0", "timeout:1"},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("parseResolvConf (-want +got):\n%s", d)
	}
	usable := got.withoutLoopback()
	if !slices.Equal(usable.Nameservers, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}) {
		t.Errorf("without loopback: %v", usable.Nameservers)
	}
	if len(got.Nameservers) != 4 {
		t.Error("withoutLoopback changed its receiver")
	}
	wantConf := "# written by berth\nsearch a.test b.test\nnameserver 192.0.2.1\nnameserver 2001:db8::1\noptions ndots:5 edns0 timeout:1\n"
	if s := string(usable.ResolvConf()); s != wantConf {
		t.Errorf("ResolvConf:\n%s\nwant:\n%s", s, wantConf)
	}
}

func TestHostDNS(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	os.WriteFile(p, []byte("nameserver 127.0.0.1\nsearch x.test\n"), 0o644)
	c, err := hostDNS(p)
	if err != nil || len(c.Nameservers) != 0 || !slices.Equal(c.Search, []string{"x.test"}) {
		t.Errorf("hostDNS with only a loopback server: %+v, %v", c, err)
	}
	if c, err := hostDNS(filepath.Join(dir, "missing")); err != nil || len(c.Nameservers) != 0 {
		t.Errorf("hostDNS without a file: %+v, %v", c, err)
	}
}

func TestHostsFile(t *testing.T) {
	a := &Attachment{
		Network: "net1",
		IPs:     []netip.Prefix{netip.MustParsePrefix("10.0.0.2/24")},
		Hosts: []HostEntry{
			{IP: netip.MustParseAddr("10.0.0.3"), Names: []string{"db", "postgres"}},
			{IP: netip.MustParseAddr("10.0.0.4"), Names: nil},
		},
	}
	got := string(HostsFile(a, "web", "", "www"))
	for _, line := range []string{"127.0.0.1\tlocalhost\n", "10.0.0.2\tweb www\n", "10.0.0.3\tdb postgres\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("hosts file lacks %q:\n%s", line, got)
		}
	}
	if strings.Contains(got, "10.0.0.4") {
		t.Errorf("nameless host listed:\n%s", got)
	}
	none := string(HostsFile(nil, "solo"))
	if !strings.Contains(none, "127.0.1.1\tsolo\n") {
		t.Errorf("hosts file without a network:\n%s", none)
	}
}

func TestNormalizePorts(t *testing.T) {
	got, err := normalizePorts([]PortMapping{
		{ContainerPort: 80},
		{HostIP: "0.0.0.0", HostPort: 8080, ContainerPort: 80, Protocol: "TCP"},
		{HostIP: "::ffff:127.0.0.1", HostPort: 53, ContainerPort: 53, Protocol: "udp"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []PortMapping{
		{ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostIP: "127.0.0.1", HostPort: 53, ContainerPort: 53, Protocol: "udp"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("normalizePorts = %v, want %v", got, want)
	}
	for _, bad := range [][]PortMapping{
		{{HostPort: 80}},
		{{ContainerPort: 80, Protocol: "sctp"}},
		{{ContainerPort: 80, HostIP: "::1"}},
		{{ContainerPort: 80, HostIP: "localhost"}},
	} {
		if _, err := normalizePorts(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("normalizePorts(%v): %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := normalizePorts([]PortMapping{{HostPort: 80, ContainerPort: 80}, {HostIP: "127.0.0.1", HostPort: 80, ContainerPort: 81}}); !errors.Is(err, ErrPortInUse) {
		t.Errorf("the same port twice: %v, want ErrPortInUse", err)
	}
	// Different protocols or addresses do not conflict.
	if _, err := normalizePorts([]PortMapping{{HostPort: 80, ContainerPort: 80}, {HostPort: 80, ContainerPort: 80, Protocol: "udp"}}); err != nil {
		t.Error(err)
	}
	if conflicts(PortMapping{HostIP: "127.0.0.1", HostPort: 1, Protocol: "tcp"}, PortMapping{HostIP: "127.0.0.2", HostPort: 1, Protocol: "tcp"}) {
		t.Error("distinct addresses conflict")
	}
}

func TestSplitRule(t *testing.T) {
	got := splitRule(`-A POSTROUTING -m comment --comment "CNI portfwd \"requiring\" masquerade" -j CNI-HOSTPORT-MASQ`)
	want := []string{"-A", "POSTROUTING", "-m", "comment", "--comment", `CNI portfwd "requiring" masquerade`, "-j", "CNI-HOSTPORT-MASQ"}
	if !slices.Equal(got, want) {
		t.Errorf("splitRule = %q, want %q", got, want)
	}
	if jumpTarget(got[2:]) != "CNI-HOSTPORT-MASQ" {
		t.Error("jumpTarget")
	}
	if got := splitRule(`-A X --comment ""`); !slices.Equal(got, []string{"-A", "X", "--comment", ""}) {
		t.Errorf("empty quoted argument: %q", got)
	}
}

func TestNames(t *testing.T) {
	if b := bridgeName("web"); b != "berth-web" {
		t.Errorf("bridgeName(web) = %s", b)
	}
	long := bridgeName("a-much-longer-name")
	if len(long) != 15 || !bridgeRE.MatchString(long) || long == bridgeName("a-much-longer-nam3") {
		t.Errorf("bridgeName of a long name = %s", long)
	}
	for _, o := range []NetworkOptions{
		{Bridge: "berth0", Subnet: netip.MustParsePrefix("10.1.0.1/24")},
		{Bridge: "berth0", Subnet: netip.MustParsePrefix("fd00::/64")},
		{Bridge: "docker0", Subnet: netip.MustParsePrefix("10.1.0.0/24")},
		{Bridge: "berth0", Subnet: netip.MustParsePrefix("10.1.0.0/30")},
	} {
		if _, err := o.info("x"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", o, err)
		}
	}
}

func TestParsePortMapping(t *testing.T) {
	for in, want := range map[string]PortMapping{
		"80":                    {ContainerPort: 80, Protocol: "tcp"},
		"8080:80":               {HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		"127.0.0.1:8080:80":     {HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		"127.0.0.1::80":         {HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "tcp"},
		"127.0.0.1:5353:53/udp": {HostIP: "127.0.0.1", HostPort: 5353, ContainerPort: 53, Protocol: "udp"},
		"53/UDP":                {ContainerPort: 53, Protocol: "udp"},
	} {
		got, err := ParsePortMapping(in)
		if err != nil || got != want {
			t.Errorf("ParsePortMapping(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil && want.HostPort != 0 {
			if again, err := ParsePortMapping(got.String()); err != nil || again != got {
				t.Errorf("ParsePortMapping(%q.String()) = %+v, %v", in, again, err)
			}
		}
	}
	for _, bad := range []string{"", "x", "8080:", "1:2:3:4", "99999", "80/sctp", "[::1]:80:80", "localhost:80:80"} {
		if _, err := ParsePortMapping(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePortMapping(%q): %v, want ErrInvalid", bad, err)
		}
	}
}
