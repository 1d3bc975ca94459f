package plugin

import (
	"errors"
	"strings"
	"testing"

	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// goodAnswer is an answer checkAnswer takes, for asked.
func goodAnswer() (*pb.AttachRequest, *pb.AttachResponse) {
	asked := &pb.AttachRequest{Id: "sb", NetnsIno: 4026532000, Ports: []*pb.PortMapping{
		{ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostIp: "127.0.0.1", HostPort: 53, ContainerPort: 53, Protocol: "udp"},
	}}
	return asked, &pb.AttachResponse{
		Network: "p2p", Interface: "eth0", NetnsIno: 4026532000,
		Addresses: []string{"10.0.0.3/31", "fd00::3/64"},
		Gateway:   "10.0.0.2",
		Routes:    []*pb.Route{{Destination: "0.0.0.0/0", Gateway: "10.0.0.2"}, {Destination: "fd00::/64"}},
		Ports: []*pb.PortMapping{
			// In another order than asked, and the chosen port first:
			// matched by what they are, not by where they are.
			{HostPort: 31000, ContainerPort: 80, Protocol: "tcp"},
			{HostIp: "::ffff:127.0.0.1", HostPort: 53, ContainerPort: 53, Protocol: "udp"},
			{HostIp: "0.0.0.0", HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		},
		Hosts: []*pb.HostEntry{{Ip: "10.0.0.2", Names: []string{"gw", "gateway.local"}}},
		Dns: &pb.DNSConfig{Nameservers: []string{"10.0.0.2"}, Search: []string{"corp.example.", "."},
			Options: []string{"ndots:2", "edns0", "trust-ad", "timeout:30"}},
	}
}

func TestCheckAnswerTakesAGoodOne(t *testing.T) {
	a, err := checkAnswer(goodAnswer())
	if err != nil {
		t.Fatal(err)
	}
	if a.Ports[1].HostIP != "127.0.0.1" || a.Ports[2].HostIP != "" {
		t.Errorf("ports %+v: host addresses not as asked", a.Ports)
	}
	if a.Interface != "eth0" || len(a.IPs) != 2 || a.Gateway.String() != "10.0.0.2" || len(a.Ports) != 3 ||
		len(a.Hosts) != 1 || len(a.DNS.Nameservers) != 1 || len(a.DNS.Search) != 2 || len(a.DNS.Options) != 4 {
		t.Errorf("attachment %+v", a)
	}
}

// Each of these answers is refused, with an error that says why.
func TestCheckAnswerRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*pb.AttachRequest, *pb.AttachResponse)
		want   string
	}{
		{"another inode", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.NetnsIno++ }, "inode"},
		{"no inode", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.NetnsIno = 0 }, "inode"},
		{"no interface", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Interface = "" }, "interface"},
		{"loopback interface", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Interface = "lo" }, "interface"},
		{"interface path", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Interface = "../eth0" }, "interface"},
		{"interface too long", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Interface = "eth0123456789012" }, "interface"},
		{"interface newline", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Interface = "eth0\n" }, "interface"},
		{"network newline", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Network = "n\n1.2.3.4 x" }, "network name"},
		{"address garbage", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Addresses[0] = "banana" }, `"banana"`},
		{"address without prefix", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Addresses[0] = "10.0.0.3" }, "prefix"},
		{"loopback", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Addresses[0] = "127.0.0.1/8" }, "loopback"},
		{"loopback6", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Addresses[1] = "::1/128" }, "loopback"},
		{"multicast", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Addresses[0] = "224.0.0.1/4" }, "multicast"},
		{"unspecified", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Addresses[0] = "0.0.0.0/0" }, "unspecified"},
		{"zone", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Addresses[1] = "fe80::1%eth0/64" }, ""},
		{"too many addresses", func(_ *pb.AttachRequest, r *pb.AttachResponse) {
			r.Addresses = make([]string, maxAddresses+1)
		}, "addresses"},
		{"gateway garbage", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Gateway = "10.0.0.2\n" }, "gateway"},
		{"gateway loopback", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Gateway = "127.0.0.1" }, "gateway"},
		{"route destination", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Routes[0].Destination = "default" }, "route"},
		{"route not masked", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Routes[0].Destination = "10.0.0.3/24" }, "route"},
		{"route gateway", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Routes[0].Gateway = "x" }, "route"},
		{"port not asked", func(_ *pb.AttachRequest, r *pb.AttachResponse) {
			r.Ports = append(r.Ports, &pb.PortMapping{HostPort: 22, ContainerPort: 22, Protocol: "tcp"})
		}, "4 ports published, 3 asked"},
		{"port swapped", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Ports[0].ContainerPort = 22 }, "not asked for"},
		{"port protocol", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Ports[1].Protocol = "tcp" }, "not asked for"},
		{"port host ip", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Ports[1].HostIp = "" }, "not asked for"},
		{"port host ip garbage", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Ports[2].HostIp = "x" }, "not asked for"},
		{"fixed port moved", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Ports[2].HostPort = 8081 }, "not asked for"},
		{"chosen port zero", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Ports[0].HostPort = 0 }, "not asked for"},
		{"port over 65535", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Ports[0].HostPort = 65536 + 31000 }, "not asked for"},
		{"port missing", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Ports = r.Ports[1:] }, "2 ports published"},
		{"hosts newline", func(_ *pb.AttachRequest, r *pb.AttachResponse) {
			r.Hosts[0].Names = []string{"gw\n6.6.6.6 bank.example"}
		}, "not a host name"},
		{"hosts space", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Hosts[0].Names = []string{"gw bank"} }, "not a host name"},
		{"hosts tab", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Hosts[0].Names = []string{"gw\tbank"} }, "not a host name"},
		{"hosts comment", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Hosts[0].Names = []string{"#"} }, "not a host name"},
		{"hosts empty name", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Hosts[0].Names = []string{""} }, "not a host name"},
		{"hosts address", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Hosts[0].Ip = "10.0.0.2 evil" }, "hosts entry address"},
		{"too many hosts", func(_ *pb.AttachRequest, r *pb.AttachResponse) {
			r.Hosts = make([]*pb.HostEntry, maxHosts+1)
		}, "hosts entries"},
		{"too many names", func(_ *pb.AttachRequest, r *pb.AttachResponse) {
			r.Hosts[0].Names = make([]string, maxHostNames+1)
		}, "names"},
		{"hosts too big", func(_ *pb.AttachRequest, r *pb.AttachResponse) {
			name := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63)
			r.Hosts = nil
			for range maxHosts {
				r.Hosts = append(r.Hosts, &pb.HostEntry{Ip: "10.0.0.9", Names: []string{name}})
			}
		}, "exceed"},
		{"nameserver", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Nameservers[0] = "10.0.0.2\noptions x" }, "nameserver"},
		{"nameserver zone newline", func(_ *pb.AttachRequest, r *pb.AttachResponse) {
			r.Dns.Nameservers[0] = "fe80::1%eth0\nnameserver 6.6.6.6"
		}, "nameserver"},
		{"nameserver zone escape", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Nameservers[0] = "fe80::1%\x1b[2J" }, "nameserver"},
		{"search newline", func(_ *pb.AttachRequest, r *pb.AttachResponse) {
			r.Dns.Search[0] = "corp\nnameserver 6.6.6.6"
		}, "search domain"},
		{"option newline", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Options[0] = "ndots:2\nnameserver" }, "resolver option"},
		{"option space", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Options[0] = "ndots:2 x" }, "resolver option"},
		{"option comment", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Options[0] = "#x" }, "resolver option"},
		{"option semicolon", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Options[0] = ";x" }, "resolver option"},
		{"option empty", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Options[0] = "" }, "resolver option"},
		{"option non-ascii", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Options[0] = "ndots\u00a0" }, "resolver option"},
		{"search two dots", func(_ *pb.AttachRequest, r *pb.AttachResponse) { r.Dns.Search[1] = ".." }, "search domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked, r := goodAnswer()
			tc.change(asked, r)
			_, err := checkAnswer(asked, r)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want ErrRefused naming %q", err, tc.want)
			}
			if strings.ContainsAny(err.Error(), "\n\t") {
				t.Errorf("the error repeats the plugin's control characters: %q", err)
			}
		})
	}
}

func TestValidHostName(t *testing.T) {
	for _, s := range []string{"a", "web", "gateway.test", "a-b.c_d", "corp.example.", "x1", "web-", "_srv", strings.Repeat("a", 253)} {
		if !validHostName(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", ".", "-a", ".a", "a b", "a\nb", "a\tb", "a\rb", "a#b", "a/b", "a:b", "ä", strings.Repeat("a", 254)} {
		if validHostName(s) {
			t.Errorf("%q taken", s)
		}
	}
}

func TestCheckIDs(t *testing.T) {
	if err := checkIDs([]string{"a", "sb-1", "0123456789abcdef"}); err != nil {
		t.Error(err)
	}
	for _, id := range []string{"", "../x", "a b", "a\x1b[2J", "-a", strings.Repeat("a", 129)} {
		if err := checkIDs([]string{"ok", id}); !errors.Is(err, ErrRefused) {
			t.Errorf("id %q: %v, want ErrRefused", id, err)
		}
	}
}

// A link-local nameserver keeps its zone, an interface's name.
func TestCheckAnswerTakesANameserverZone(t *testing.T) {
	req, r := goodAnswer()
	r.Dns.Nameservers[0] = "fe80::1%eth0"
	a, err := checkAnswer(req, r)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.DNS.Nameservers[0].String(); got != "fe80::1%eth0" {
		t.Errorf("nameserver %s, want fe80::1%%eth0", got)
	}
}
