package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// echoInNS serves, on port of every address in the namespace, a server
// that answers each connection with greeting and then what it read, once
// the client has closed its side.
func (ns *testNS) echoInNS(t testing.TB, port int, greeting string) {
	t.Helper()
	var l net.Listener
	if err := ns.do(func() (err error) { l, err = net.Listen("tcp4", ":"+strconv.Itoa(port)); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte(greeting))
				b, _ := io.ReadAll(c)
				c.Write(b)
			}()
		}
	}()
}

// talk connects to addr, sends msg, closes its side and reads all.
func talk(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

// A published port on the host's 127.0.0.1 reaches the sandbox's server,
// half closes included, and is closed by Detach.
func TestPublishedPort(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.11.0/24")
	ns := newNS(t)
	ns.echoInNS(t, 8080, "hello:")
	id := testID(t, "a")
	r, err := n.Attach(context.Background(), &plugin.AttachRequest{ID: id, NetnsPath: ns.path,
		Ports: []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 8080}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Detach(context.Background(), id, "")
	if len(r.Ports) != 1 || r.Ports[0].HostPort == 0 || r.Ports[0].Protocol != "tcp" || r.Ports[0].HostIP != "127.0.0.1" {
		t.Fatalf("ports %+v: want 127.0.0.1 with the host port chosen, tcp", r.Ports)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(r.Ports[0].HostPort)))
	if got, err := talk(addr, "ping"); err != nil || got != "hello:ping" {
		t.Fatalf("through %s: %q, %v; want hello:ping", addr, got, err)
	}
	rec, err := n.state.read(id)
	if err != nil || len(rec.Ports) != 1 || rec.Ports[0].HostPort != r.Ports[0].HostPort || rec.Owner == nil {
		t.Errorf("record %+v, %v: want the port and its owner", rec, err)
	}
	if err := n.Detach(context.Background(), id, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := talk(addr, "ping"); err == nil {
		t.Errorf("%s still answers after Detach", addr)
	}
}

// A port taken on the host fails Attach, which leaves nothing; UDP is
// refused.
func TestPublishedPortRefused(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.12.0/24")
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := uint16(taken.Addr().(*net.TCPAddr).Port)
	id := testID(t, "a")
	_, err = n.Attach(context.Background(), &plugin.AttachRequest{ID: id, NetnsPath: newNS(t).path,
		Ports: []netplug.PortMapping{{HostIP: "127.0.0.1", HostPort: port, ContainerPort: 80}}})
	if err == nil {
		t.Fatal("attach publishing a port in use succeeded")
	}
	assertGone(t, n, id)
	_, err = n.Attach(context.Background(), &plugin.AttachRequest{ID: id, NetnsPath: newNS(t).path,
		Ports: []netplug.PortMapping{{ContainerPort: 53, Protocol: "udp"}}})
	if !errors.Is(err, plugin.ErrUnsupported) {
		t.Errorf("UDP port: %v, want ErrUnsupported", err)
	}
	assertGone(t, n, id)
}

// After kill -9 of the plugin, the restarted plugin publishes the port
// again, on the same host port.
func TestPublishedPortAfterRestart(t *testing.T) {
	needRoot(t)
	n, err := plugin.OpenNetwork(t.Context(), pluginBinary(t), hostOptions(t, t.TempDir(), "10.218.13.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ns := newNS(t)
	ns.echoInNS(t, 8080, "hello:")
	id := testID(t, "a")
	a, err := n.Attach(t.Context(), id, ns.path, &netplug.AttachOptions{Ports: []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 8080, Protocol: "tcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Detach(context.Background(), id, ns.path)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(a.Ports[0].HostPort)))
	if got, err := talk(addr, "one"); err != nil || got != "hello:one" {
		t.Fatalf("through %s: %q, %v", addr, got, err)
	}
	killPlugin(t, pluginBinary(t))
	for range 2 { // the first call after the kill may report the exit
		if _, err = n.Attached(t.Context()); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, err := talk(addr, "two"); err != nil || got != "hello:two" {
		t.Fatalf("through %s after the restart: %q, %v", addr, got, err)
	}
	if err := n.Detach(t.Context(), id, ns.path); err != nil {
		t.Fatal(err)
	}
	if _, err := talk(addr, "three"); err == nil {
		t.Errorf("%s still answers after Detach", addr)
	}
}

// A listener that outlives its sandbox's link, because another plugin
// process sharing the state directory detached the sandbox, does not
// deliver its clients to the next sandbox given the same address.
func TestStalePortReachesNoOtherSandbox(t *testing.T) {
	needRoot(t)
	n1 := newTestNetwork(t, "10.218.20.0/24")
	n2 := newP2PNetwork(n1.state.dir, n1.defaults, n1.log)
	ns1, ns2 := newNS(t), newNS(t)
	ns1.echoInNS(t, 8080, "first:")
	ns2.echoInNS(t, 8080, "second:")
	first, second := testID(t, "first"), testID(t, "second")
	r, err := n1.Attach(context.Background(), &plugin.AttachRequest{ID: first, NetnsPath: ns1.path,
		Ports: []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 8080}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Detach(context.Background(), first, "")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(r.Ports[0].HostPort)))
	if got, err := talk(addr, "ping"); err != nil || got != "first:ping" {
		t.Fatalf("through %s: %q, %v; want first:ping", addr, got, err)
	}
	if err := n2.Detach(context.Background(), first, ""); err != nil {
		t.Fatal(err)
	}
	r2 := mustAttach(t, n2, second, ns2, nil)
	defer n2.Detach(context.Background(), second, "")
	if r2.IPs[0] != r.IPs[0] {
		t.Fatalf("second sandbox has %s, not the first's %s: the test proves nothing", r2.IPs[0], r.IPs[0])
	}
	if got, _ := talk(addr, "ping"); got != "" {
		t.Errorf("the first sandbox's port, after its Detach by another process, reached %q", got)
	}
	// The publishing process's own Detach, which finds no record, still
	// closes its listener.
	if err := n1.Detach(context.Background(), first, ""); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("Detach of an id another process detached: %v, want ErrNotFound", err)
	}
	if _, err := talk(addr, "ping"); err == nil {
		t.Errorf("%s still accepts after the publishing process's Detach", addr)
	}
}

// An Attach that goes on after berth gave up on it (its call cancelled)
// while berth's undo, a Detach, removes the record, keeps no listener and
// writes no record back, whichever of publish and Detach comes first.
func TestPublishAfterConcurrentDetach(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.22.0/24")
	ns := newNS(t)
	ns.echoInNS(t, 8080, "hello:")
	id := testID(t, "a")
	l, err := n.reserve(context.Background(), id, netip.MustParsePrefix("10.218.22.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Detach(context.Background(), id, "")
	h, err := openNetns(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := n.connect(context.Background(), l, h, false); err != nil {
		t.Fatal(err)
	}
	if err := n.Detach(context.Background(), id, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.publish(l, []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 8080}}); err == nil {
		t.Error("publish after the record's removal succeeded")
	}
	if _, err := n.state.read(id); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("record after publish raced Detach: %v, want none", err)
	}
	if len(l.Ports) == 1 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(l.Ports[0].HostPort)))
		if _, err := talk(addr, "ping"); err == nil {
			t.Errorf("%s still accepts after publish raced Detach", addr)
		}
	}
	n.ports.mu.Lock()
	defer n.ports.mu.Unlock()
	if _, ok := n.ports.byID[id]; ok {
		t.Error("the publisher keeps listeners of a detached id")
	}
}
