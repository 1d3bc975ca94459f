package netplug

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/osthread"
)

// A Pool keeps network namespaces attached to a network ahead of time, so
// that a sandbox joins one at start instead of waiting for the plugins:
// attaching to a bridge takes tens of milliseconds and detaching a hundred,
// most of it iptables rule commits, against a few milliseconds for the
// rest of a sandbox's start.
//
// Each namespace serves one sandbox and is then detached and thrown away
// in the background: a namespace a workload has used is never handed to
// another. Pooled namespaces have no published ports and no name on the
// network, so a Pool serves the default bridge network, not named ones
// or sandboxes that publish ports (their callers attach directly).
//
// A namespace is held by a thread of this process that did nothing but
// unshare it, so that no process, mount or file outlives the program for
// it; if the program dies, Networks.Prune detaches what is left.
type Pool struct {
	net  Network
	size int
	log  *slog.Logger

	mu      sync.Mutex
	ready   []*pooledNS
	closed  bool
	filling bool
	pending sync.WaitGroup // detaches and fills in flight
}

type pooledNS struct {
	id   string
	path string // /proc/<pid>/task/<tid>/ns/net of the holding thread
	a    *Attachment
	stop chan struct{} // closing it ends the holding thread
}

// NewPool returns a pool that keeps size namespaces attached to n. It
// starts filling at once, in the background.
func NewPool(n Network, size int, log *slog.Logger) (*Pool, error) {
	if size < 1 {
		return nil, fmt.Errorf("%w: pool size %d", ErrInvalid, size)
	}
	if IsHost(n) {
		return nil, fmt.Errorf("%w: the host's network cannot be pooled", ErrInvalid)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{net: n, size: size, log: log}
	p.fill()
	return p, nil
}

// Acquire returns the path of a network namespace attached to the pool's
// network, for the sandbox id to join, and what the attachment gave it;
// release detaches and discards it once the sandbox is gone. It takes a
// ready namespace if there is one and prepares one otherwise.
func (p *Pool) Acquire(ctx context.Context, id string) (path string, a *Attachment, release func(), err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return "", nil, nil, errors.New("netplug: pool closed")
	}
	var ns *pooledNS
	if n := len(p.ready); n > 0 {
		ns, p.ready = p.ready[n-1], p.ready[:n-1]
	}
	p.mu.Unlock()
	p.fill()
	if ns == nil {
		if ns, err = p.prepare(ctx); err != nil {
			return "", nil, nil, err
		}
	}
	p.log.Debug("netplug: pooled namespace taken", "sandbox", id, "pooled", ns.id)
	release = sync.OnceFunc(func() {
		p.pending.Add(1)
		go func() {
			defer p.pending.Done()
			p.discard(ns)
		}()
	})
	return ns.path, ns.a, release, nil
}

// fill starts preparing namespaces in the background until size are ready.
func (p *Pool) fill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.filling || len(p.ready) >= p.size {
		return
	}
	p.filling = true
	p.pending.Add(1)
	go func() {
		defer p.pending.Done()
		for {
			p.mu.Lock()
			if p.closed || len(p.ready) >= p.size {
				p.filling = false
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			ns, err := p.prepare(context.Background())
			p.mu.Lock()
			if err != nil {
				p.filling = false
				p.mu.Unlock()
				p.log.Warn("netplug: prepare a pooled namespace", "err", err)
				return
			}
			if p.closed {
				p.mu.Unlock()
				p.discard(ns)
				return
			}
			p.ready = append(p.ready, ns)
			p.mu.Unlock()
		}
	}()
}

// prepare makes a namespace on a thread of its own and attaches it.
func (p *Pool) prepare(ctx context.Context) (*pooledNS, error) {
	var b [6]byte
	rand.Read(b[:])
	ns := &pooledNS{id: "pool-" + hex.EncodeToString(b[:]), stop: make(chan struct{})}
	made := make(chan error, 1)
	osthread.Go(func() {
		// The thread is never unlocked: it carries the namespace, and the
		// runtime ends it when this goroutine returns.
		err := unix.Unshare(unix.CLONE_NEWNET)
		if err == nil {
			err = loopbackUp()
		}
		if err == nil {
			err = letEveryGroupPing()
		}
		if err == nil {
			ns.path = "/proc/" + strconv.Itoa(os.Getpid()) + "/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
		}
		made <- err
		if err == nil {
			<-ns.stop
		}
	})
	if err := <-made; err != nil {
		close(ns.stop)
		return nil, fmt.Errorf("netplug: pooled namespace: %w", err)
	}
	a, err := p.net.Attach(ctx, ns.id, ns.path, &AttachOptions{})
	if err != nil {
		close(ns.stop)
		return nil, err
	}
	ns.a = a
	return ns, nil
}

// discard detaches a namespace and lets its thread end.
func (p *Pool) discard(ns *pooledNS) {
	if err := p.net.Detach(context.Background(), ns.id, ns.path); err != nil {
		p.log.Warn("netplug: detach a pooled namespace", "pooled", ns.id, "err", err)
	}
	close(ns.stop)
}

// Close discards the namespaces that are ready and waits until every
// namespace handed out and released so far has been detached.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	ready := p.ready
	p.ready = nil
	p.mu.Unlock()
	for _, ns := range ready {
		p.discard(ns)
	}
	p.pending.Wait()
}

// loopbackUp brings up lo in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// letEveryGroupPing lets every group open ICMP echo sockets in the calling
// thread's network namespace, as a sandbox's own namespace does: ping
// works there without CAP_NET_RAW. Written from the host's user
// namespace, the range covers the groups of every user namespace too.
func letEveryGroupPing() error {
	return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0)
}
