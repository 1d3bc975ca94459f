package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// Published ports are a TCP proxy in the plugin's process: a listener on
// the host for each port, and for each connection one to the sandbox's
// address, copied both ways. There is no DNAT, so no iptables or nftables
// rule and no route_localnet for ports on 127.0.0.1; the sandbox sees
// connections come from its host end's address. The listeners live as
// long as the plugin's process: the ports are down from a crash of the
// plugin to its restart, which publishes them again (restorePorts).

// dialTimeout bounds a proxied connection's dial to the sandbox.
const dialTimeout = 10 * time.Second

// A publisher keeps the ports of the sandboxes this process attached.
type publisher struct {
	log *slog.Logger

	mu   sync.Mutex
	byID map[string]*proxies
}

// proxies are one sandbox's listeners and the connections they carry.
type proxies struct {
	listeners []net.Listener
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// checkPorts refuses what the proxy cannot publish: UDP, and host
// addresses that are not IPv4 literals.
func checkPorts(ports []netplug.PortMapping) error {
	for _, p := range ports {
		if p.Protocol != "" && p.Protocol != "tcp" {
			return fmt.Errorf("port %d/%s: only TCP ports are published: %w", p.ContainerPort, p.Protocol, plugin.ErrUnsupported)
		}
		if p.ContainerPort == 0 {
			return fmt.Errorf("port mapping without a container port: %w", plugin.ErrInvalid)
		}
		if p.HostIP != "" {
			a, err := netip.ParseAddr(p.HostIP)
			if err != nil || !a.Is4() {
				return fmt.Errorf("port %d: host address %q is not IPv4: %w", p.ContainerPort, p.HostIP, plugin.ErrInvalid)
			}
		}
	}
	return nil
}

// publish listens on the host for each of ports and proxies to target,
// and returns the ports with the host ports chosen. On an error nothing
// is left listening.
func (p *publisher) publish(id string, target netip.Addr, ports []netplug.PortMapping) ([]netplug.PortMapping, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	px := &proxies{conns: map[net.Conn]struct{}{}}
	via := hostIfName(id)
	out := make([]netplug.PortMapping, 0, len(ports))
	for _, m := range ports {
		l, err := net.Listen("tcp4", net.JoinHostPort(m.HostIP, strconv.Itoa(int(m.HostPort))))
		if err != nil {
			px.close()
			return nil, fmt.Errorf("publish port %s:%d: %w", m.HostIP, m.HostPort, err)
		}
		px.listeners = append(px.listeners, l)
		m.HostPort = uint16(l.Addr().(*net.TCPAddr).Port)
		if m.Protocol == "" {
			m.Protocol = "tcp"
		}
		out = append(out, m)
		dst := net.JoinHostPort(target.String(), strconv.Itoa(int(m.ContainerPort)))
		px.wg.Go(func() { px.serve(l, dst, via, p.log) })
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byID == nil {
		p.byID = map[string]*proxies{}
	}
	if old := p.byID[id]; old != nil {
		old.close()
	}
	p.byID[id] = px
	return out, nil
}

// unpublish closes id's listeners and the connections they carry.
func (p *publisher) unpublish(id string) {
	p.mu.Lock()
	px := p.byID[id]
	delete(p.byID, id)
	p.mu.Unlock()
	if px != nil {
		px.close()
	}
}

// serve accepts on l until it is closed, and proxies to dst through the
// host end via.
func (px *proxies) serve(l net.Listener, dst, via string, log *slog.Logger) {
	for {
		c, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Error("published port stops accepting", "address", l.Addr(), "err", err)
			}
			return
		}
		if !px.track(c) {
			c.Close()
			return
		}
		px.wg.Go(func() {
			defer px.untrack(c)
			px.proxy(c, dst, via, log)
		})
	}
}

// proxy copies between c and a connection to dst until both directions
// are done, passing on each side's end of stream as a half close.
//
// The connection to dst leaves through the host end via and no other
// interface (SO_BINDTODEVICE): a listener that outlived its sandbox's link
// (one whose record another plugin process removed) must not deliver its
// clients to whichever sandbox has the address now. Another sandbox's host
// end has another name, and a missing one fails the dial.
func (px *proxies) proxy(c net.Conn, dst, via string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = unix.BindToDevice(int(fd), via) }); cerr != nil {
			return cerr
		}
		return err
	}}
	s, err := d.DialContext(ctx, "tcp4", dst)
	if err != nil {
		log.Debug("published port: dial the sandbox", "address", dst, "err", err)
		c.Close()
		return
	}
	if !px.track(s) {
		s.Close()
		c.Close()
		return
	}
	defer px.untrack(s)
	done := make(chan struct{}, 2)
	pipe := func(to, from net.Conn) {
		io.Copy(to, from)
		if tc, ok := to.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(s, c)
	go pipe(c, s)
	<-done
	<-done
	c.Close()
	s.Close()
}

// track records c so that close can end it; false once closed.
func (px *proxies) track(c net.Conn) bool {
	px.mu.Lock()
	defer px.mu.Unlock()
	if px.closed {
		return false
	}
	px.conns[c] = struct{}{}
	return true
}

func (px *proxies) untrack(c net.Conn) {
	px.mu.Lock()
	delete(px.conns, c)
	px.mu.Unlock()
	c.Close()
}

// close stops the listeners and the connections and waits for their
// goroutines.
func (px *proxies) close() {
	px.mu.Lock()
	px.closed = true
	for c := range px.conns {
		c.Close()
	}
	px.mu.Unlock()
	for _, l := range px.listeners {
		l.Close()
	}
	px.wg.Wait()
}

// An owner identifies the berth process a plugin process serves, its
// parent: a plugin restarted after a crash has the same one, and so
// publishes again the ports its predecessor published, and no other
// berth process's.
type owner struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // in clock ticks after boot, against pid reuse
}

// parentOwner is this process's parent.
func parentOwner() (owner, error) {
	ppid := os.Getppid()
	start, err := processStart(ppid)
	return owner{PID: ppid, Start: start}, err
}

// processStart reads the start time of process pid from /proc.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold anything; the start time is the 22nd field, the 20th of these.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// restorePorts publishes again the ports of the sandboxes this process's
// parent attached through a predecessor that died, whose links are still
// there. A port that cannot be had again is logged.
func (n *p2pNetwork) restorePorts() {
	me, err := parentOwner()
	if err != nil {
		n.log.Warn("published ports of a previous run not restored", "err", err)
		return
	}
	links, err := n.state.all()
	if err != nil {
		n.log.Warn("published ports of a previous run not restored", "err", err)
		return
	}
	for _, l := range links {
		if len(l.Ports) == 0 || l.Owner == nil || *l.Owner != me {
			continue
		}
		if _, err := netlink.LinkByName(l.HostIf); err != nil {
			continue // the sandbox is gone; its Detach is to come
		}
		if _, err := n.ports.publish(l.ID, l.sandboxAddr(), l.Ports); err != nil {
			n.log.Error("publish ports again after a restart", "id", l.ID, "err", err)
			continue
		}
		n.log.Info("published ports again after a restart", "id", l.ID, "ports", len(l.Ports))
	}
}
