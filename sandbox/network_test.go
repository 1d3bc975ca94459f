package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/netplug"
)

func defaultNetwork(t *testing.T) Network {
	n, err := testEnv.nets.Get(context.Background(), "bridge")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A busybox httpd in a sandbox serves a file to the host through a
// published port on the host's loopback.
func TestPublishedTCPPort(t *testing.T) {
	// Alpine's busybox has no httpd; the busybox image's has.
	sb := New("busybox:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Ports = []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "tcp"}}
		o.Args = []string{"/bin/sh", "-c", "mkdir -p /www && echo served-from-sandbox > /www/index.html && exec httpd -f -p 80 -h /www"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	a := sb.Attachment()
	if a == nil || len(a.Ports) != 1 || a.Ports[0].HostPort == 0 || len(a.IPs) == 0 {
		t.Fatalf("attachment: %+v", a)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", a.Ports[0].HostPort)
	if body := httpBody(t, url); body != "served-from-sandbox\n" {
		t.Errorf("GET %s: %q", url, body)
	}
}

// UDP publishing: a datagram sent to the host port reaches the sandbox.
func TestPublishedUDPPort(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Ports = []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 5353, Protocol: "udp"}}
		o.Args = []string{"nc", "-u", "-l", "-p", "5353"}
		o.Stdout = &out
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	port := sb.Attachment().Ports[0].HostPort
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, func() bool {
		conn.Write([]byte("udp-datagram\n"))
		time.Sleep(20 * time.Millisecond)
		return strings.Contains(out.String(), "udp-datagram")
	})
}

// Two sandboxes on a named network reach each other by name.
func TestNamedNetworkByName(t *testing.T) {
	ctx := context.Background()
	n, err := testEnv.nets.Create(ctx, "sbtest-app", &netplug.NetworkOptions{Subnet: netip.MustParsePrefix("10.216.1.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer testEnv.nets.Remove(ctx, "sbtest-app")
	db := New("busybox:test", opts(func(o *Options) {
		o.Network = n
		o.Hostname = "db"
		o.Args = []string{"/bin/sh", "-c", "mkdir -p /www && echo hello-from-db > /www/index.html && exec httpd -f -p 8080 -h /www"}
	}))
	if err := db.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	waitFor(t, func() bool {
		_, out, _ := run(t, "alpine:test", opts(func(o *Options) {
			o.Network = n
			o.Hostname = "app"
			o.Args = []string{"/bin/sh", "-c", "grep -w db /etc/hosts >/dev/null && wget -qO- -T 2 http://db:8080/index.html"}
		}))
		got = out
		return out == "hello-from-db\n"
	})
	if got != "hello-from-db\n" {
		t.Errorf("app got %q from db", got)
	}
}

// The host network shows the host's interfaces; no network shows only lo.
func TestHostAndNoneNetwork(t *testing.T) {
	ifaces, _ := net.Interfaces()
	var host []string
	for _, i := range ifaces {
		host = append(host, i.Name)
	}
	sort.Strings(host)
	_, out, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.Network = netplug.Host()
		o.Args = []string{"ls", "/sys/class/net"}
	}))
	if got := strings.Fields(out); strings.Join(got, " ") != strings.Join(host, " ") {
		t.Errorf("host network shows %v, the host has %v", got, host)
	}
	_, out, _ = run(t, "alpine:test", opts(func(o *Options) { o.Args = []string{"ls", "/sys/class/net"} }))
	if strings.TrimSpace(out) != "lo" {
		t.Errorf("no network shows %q", out)
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); len(b) == 0 {
		t.Skip()
	}
}

// A sandbox joins another's network namespace, as a pod's sidecar would:
// it reaches the first one's server on localhost.
func TestJoinNetwork(t *testing.T) {
	web := New("busybox:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Args = []string{"/bin/sh", "-c", "mkdir -p /www && echo from-web > /www/index.html && exec httpd -f -p 8081 -h /www"}
	}))
	if err := web.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	ip := web.Attachment().IPs[0].Addr().String()
	var out string
	waitFor(t, func() bool {
		_, out, _ = run(t, "busybox:test", opts(func(o *Options) {
			o.JoinNetwork = web.NetworkNamespace()
			o.Args = []string{"/bin/sh", "-c", "wget -qO- -T 2 http://127.0.0.1:8081/index.html && ip -o -4 addr show eth0"}
		}))
		return strings.HasPrefix(out, "from-web\n")
	})
	if !strings.Contains(out, ip+"/") {
		t.Errorf("sidecar saw %q, want the web sandbox's address %s", out, ip)
	}
}

func TestExtraHosts(t *testing.T) {
	extra := []netplug.HostEntry{{IP: netip.MustParseAddr("10.99.0.7"), Names: []string{"registry.internal"}}}
	for _, n := range []Network{nil, defaultNetwork(t)} {
		_, out, _ := run(t, "alpine:test", opts(func(o *Options) {
			o.Network = n
			o.ExtraHosts = extra
			o.Args = []string{"grep", "registry.internal", "/etc/hosts"}
		}))
		if !strings.HasPrefix(out, "10.99.0.7\tregistry.internal") {
			t.Errorf("network %v: /etc/hosts has %q", n, out)
		}
	}
}

// Sandboxes from a pool of prepared namespaces get a working address on
// the bridge at once, and every namespace is detached after use.
func TestNetworkPool(t *testing.T) {
	pool, err := netplug.NewPool(defaultNetwork(t), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Even when the test fails half-way, what the pool prepared in the
	// background must be detached before the test's networks go.
	defer pool.Close()
	web := New("busybox:test", opts(func(o *Options) {
		o.NetworkPool = pool
		o.Args = []string{"/bin/sh", "-c", "mkdir -p /www && echo pooled > /www/index.html && exec httpd -f -p 8082 -h /www"}
	}))
	if err := web.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A failure half-way must not leave the server holding a pooled
	// namespace for the next test to find.
	defer web.Close()
	a := web.Attachment()
	if a == nil || len(a.IPs) == 0 {
		t.Fatalf("attachment %+v", a)
	}
	url := fmt.Sprintf("http://%s:8082/index.html", a.IPs[0].Addr())
	if body := httpBody(t, url); body != "pooled\n" {
		t.Errorf("GET %s: %q", url, body)
	}
	for i := 0; i < 3; i++ {
		_, out, _ := run(t, "alpine:test", opts(func(o *Options) {
			o.NetworkPool = pool
			o.Args = []string{"/bin/sh", "-c", "ip -o -4 addr show eth0 | wc -l; grep -c nameserver /etc/resolv.conf || true"}
		}))
		if !strings.HasPrefix(out, "1\n") {
			t.Errorf("pooled sandbox %d: %q", i, out)
		}
	}
	runDir := testEnv.dir + "/run-networks"
	traces := traceNetworks(t, runDir, nil)
	if len(traces.ports) == 0 {
		t.Fatalf("no attachment recorded in %s", runDir)
	}
	web.Close()
	pool.Close()
	if left := traces.left(t, runDir); len(left) > 0 {
		t.Errorf("after the pool closed: %q", left)
	}
}

// A sandbox pool on a bridge network: every sandbox, waiting or taken, has
// an address of its own, reachable from the host, and closing the pool
// leaves no veth or lease behind.
func TestSandboxPoolOnBridge(t *testing.T) {
	p, err := NewPool(context.Background(), "busybox:test", opts(func(o *Options) { o.Network = defaultNetwork(t) }), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	web := p.New(&Options{Args: []string{"/bin/sh", "-c", "mkdir -p /www && echo from-pool > /www/index.html && exec httpd -f -p 8083 -h /www"}})
	if err := web.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	a := web.Attachment()
	if a == nil || len(a.IPs) == 0 {
		t.Fatalf("attachment %+v", a)
	}
	url := fmt.Sprintf("http://%s:8083/index.html", a.IPs[0].Addr())
	if body := httpBody(t, url); body != "from-pool\n" {
		t.Errorf("GET %s: %q", url, body)
	}
	var out bytes.Buffer
	res, err := p.New(&Options{Args: []string{"/bin/sh", "-c", "ip -o -4 addr show eth0 | wc -l"}, Stdout: &out}).Run(context.Background())
	if err != nil || !res.Success() || out.String() != "1\n" {
		t.Errorf("a second pooled sandbox: %+v %v %q", res, err, out.String())
	}
	runDir := testEnv.dir + "/run-networks"
	traces := traceNetworks(t, runDir, nil)
	if len(traces.ports) == 0 {
		t.Fatalf("no attachment recorded in %s", runDir)
	}
	web.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if left := traces.left(t, runDir); len(left) > 0 {
		t.Errorf("after the pool closed: %q", left)
	}
}

// httpBody waits until url answers 200 and returns the body it sent.
func httpBody(t *testing.T, url string) string {
	t.Helper()
	var body string
	waitFor(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	return body
}
