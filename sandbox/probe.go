package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/internal/osthread"
)

// DialContext connects to address in the sandbox's network namespace, as
// its workload would: "127.0.0.1:80" is the sandbox's own loopback, which
// needs no published port and no network at all. address must be an IP
// address and a port; network is "tcp", "tcp4", "tcp6", "udp", "udp4" or
// "udp6". The connection, once made, is used like any other.
//
// The socket is made on an OS thread that enters the namespace and is then
// thrown away, so nothing else of this process ever runs in it; no host
// address is dialed, so a port the workload opened on the host (through
// the host's network) is never mistaken for its own. A sandbox that
// shares the host's network has the host's namespace, which is then where
// the address is dialed.
func (s *Sandbox) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := s.dialInside(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	return c, nil
}

// dialInside is DialContext, its errors not naming the sandbox.
func (s *Sandbox) dialInside(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("dial: network %s: only tcp and udp", clip.Quote(network))
	}
	// No name is resolved: a resolver running in the sandbox's namespace
	// would ask the host's DNS servers from there, or the workload's.
	if _, err := netip.ParseAddrPort(address); err != nil {
		return nil, fmt.Errorf("dial: address %s is not an IP address and port", clip.Quote(address))
	}
	pidfd, err := s.initPidFD()
	if err != nil {
		return nil, err
	}
	type dialed struct {
		conn net.Conn
		err  error
	}
	done := make(chan dialed, 1)
	osthread.Go(func() {
		defer unix.Close(pidfd)
		// A pidfd names the init itself, never a later process with
		// its PID.
		if err := unix.Setns(pidfd, unix.CLONE_NEWNET); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				err = ErrNotRunning
			}
			done <- dialed{err: fmt.Errorf("enter the sandbox's network namespace: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		done <- dialed{c, err}
	})
	r := <-done
	return r.conn, r.err
}

// initPidFD returns a pidfd of the sandbox's running init.
func (s *Sandbox) initPidFD() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.result == nil {
		return -1, ErrNotStarted
	}
	select {
	case <-s.done:
		return -1, ErrNotRunning
	default:
	}
	return pidfdOf(s.proc)
}

// pidfdOf returns a pidfd of proc, or ErrNotRunning if it has exited.
// proc holds a pidfd of its own (or was reaped by this process): if it
// still answers once the new pidfd is open, the pid was not reused
// between its exit and the pidfd's opening, and the pidfd is proc's.
func pidfdOf(proc *os.Process) (int, error) {
	fd, err := unix.PidfdOpen(proc.Pid, 0)
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return -1, ErrNotRunning
		}
		return -1, fmt.Errorf("pidfd of the sandbox's init: %w", err)
	}
	if err := proc.Signal(syscall.Signal(0)); err != nil {
		unix.Close(fd)
		return -1, ErrNotRunning
	}
	return fd, nil
}

// initAlive reports whether the sandbox's init still runs; for a handle
// from Open, whose end only its supervisor sees.
func (s *Sandbox) initAlive() bool {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	return p != nil && p.Signal(syscall.Signal(0)) == nil
}

// loopback returns the address of the sandbox's loopback at port.
func loopback(port int) string {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)).String()
}
