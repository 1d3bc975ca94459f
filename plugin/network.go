package plugin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/netplug"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// callTimeout bounds a call on the plugin whose context has no earlier
// deadline, as netplug bounds a CNI plugin: a sandbox's teardown detaches
// with a context that never ends, and a hung plugin must not hang it. The
// Detach that undoes a failed Attach gets as long, whatever the context
// of that Attach has become.
const callTimeout = time.Minute

// Network is a network plugin seen from the host: it satisfies
// sandbox.Network, so a sandbox uses it as it would a netplug network.
// It is safe for concurrent use.
type Network struct {
	c        *client
	settings map[string]string
}

// OpenNetwork starts the network plugin at path. Close stops it.
func OpenNetwork(ctx context.Context, path string, opts *Options) (*Network, error) {
	c, err := newClient(path, KindNetwork, opts)
	if err != nil {
		return nil, err
	}
	// Callers of a sandbox.Network test netplug's sentinels (Recover
	// takes a detach of an unknown id for done): a plugin's mean the same.
	c.alias(ErrNotFound, netplug.ErrNotFound)
	c.alias(ErrExists, netplug.ErrAttached)
	if _, err := c.conn(ctx); err != nil {
		c.close()
		return nil, err
	}
	n := &Network{c: c}
	if opts != nil {
		n.settings = maps.Clone(opts.Settings)
	}
	return n, nil
}

// Info describes the plugin.
func (n *Network) Info() Info { return n.c.Info() }

// Attach has the plugin connect sandbox id's network namespace at
// netnsPath, and checks what it says it did, in the namespace itself.
//
// The plugin is given the namespace's identity with its path, and berth
// holds the namespace open for the whole call, so that the path names
// the same namespace throughout. Ports and DNS settings go only to a
// plugin that announced it honours them; opts.HostsFile and ExtraHosts
// stay berth's: it writes the hosts file itself from the answer.
//
// An answer berth refuses wraps ErrRefused. It, and any failure of a call
// the plugin was sent but ErrExists, is undone with a Detach before
// Attach returns, so that a failed Attach leaves nothing for the caller
// to undo, even if the plugin died during it: the Detach starts it again.
// Without a deadline in ctx, the call is bounded by a minute.
func (n *Network) Attach(ctx context.Context, id, netnsPath string, opts *netplug.AttachOptions) (*netplug.Attachment, error) {
	ns, err := openNetns(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", clip.Quote(id), err)
	}
	defer ns.Close()
	req, err := attachRequest(id, netnsPath, ns, opts, n.c.Info(), n.settings)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", clip.Quote(id), err)
	}
	cc, err := n.c.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", clip.Quote(id), err)
	}
	a, err := n.attach(ctx, cc, req, ns)
	if err == nil && opts != nil && opts.HostsFile != "" {
		names := append([]string{opts.Hostname}, opts.Aliases...)
		hosts := &netplug.Attachment{Network: a.Network, IPs: a.IPs, Hosts: append(slices.Clone(a.Hosts), opts.ExtraHosts...)}
		if err = writeInPlace(opts.HostsFile, netplug.HostsFile(hosts, names...)); err != nil {
			err = fmt.Errorf("hosts file: %w", err)
		}
	}
	if err != nil {
		if !errors.Is(err, ErrExists) {
			err = n.undo(ctx, id, netnsPath, err)
		}
		return nil, fmt.Errorf("attach %s: %w", clip.Quote(id), err)
	}
	return a, nil
}

// attach makes the call and checks its answer.
func (n *Network) attach(ctx context.Context, cc grpc.ClientConnInterface, req *pb.AttachRequest, ns *netnsFile) (*netplug.Attachment, error) {
	ctx, cancel := withCallTimeout(ctx)
	defer cancel()
	r, err := pb.NewNetworkServiceClient(cc).Attach(ctx, req)
	if err != nil {
		return nil, n.c.callErr(err)
	}
	a, err := checkAnswer(req, r)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", n.c.name, err)
	}
	if err := verifyInNetns(ns, a); err != nil {
		return nil, fmt.Errorf("plugin %s: %w", n.c.name, err)
	}
	return a, nil
}

// undo detaches an attachment berth does not keep, for the reason cause,
// which it returns, with the Detach's error if that failed too. The plugin
// may have made nothing (ErrNotFound), or died, in which case the Detach
// starts it again and the new process undoes what the old one did, from
// the id alone as the protocol requires.
func (n *Network) undo(ctx context.Context, id, netnsPath string, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	err := n.Detach(ctx, id, netnsPath)
	if err == nil || errors.Is(err, ErrNotFound) {
		return cause
	}
	n.c.log.Error("undo a failed attach", "id", id, "attach_err", cause, "err", err)
	return errors.Join(cause, fmt.Errorf("undo: %w", err))
}

// Detach has the plugin undo Attach of sandbox id. netnsPath is the path
// Attach was given; the namespace may be gone by then, and the plugin
// must manage from the id alone. An id the plugin does not know is an
// error wrapping ErrNotFound. Without a deadline in ctx, the call is
// bounded by a minute.
//
// Detach is the one call berth makes again when the plugin turns out to
// have died: undoing is safe to repeat, and a sandbox's Detach is often
// the first call to find that its plugin died while the sandbox ran.
func (n *Network) Detach(ctx context.Context, id, netnsPath string) error {
	if !keyRE.MatchString(id) {
		return fmt.Errorf("detach %s: sandbox id: %w", clip.Quote(id), ErrInvalid)
	}
	ctx, cancel := withCallTimeout(ctx)
	defer cancel()
	err := n.detach(ctx, id, netnsPath)
	if errors.Is(err, ErrPluginExited) && ctx.Err() == nil {
		n.c.log.Info("detach again, the plugin having died", "id", id, "err", err)
		err = n.detach(ctx, id, netnsPath)
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", clip.Quote(id), err)
	}
	return nil
}

func (n *Network) detach(ctx context.Context, id, netnsPath string) error {
	cc, err := n.c.conn(ctx)
	if err != nil {
		return err
	}
	_, err = pb.NewNetworkServiceClient(cc).Detach(ctx, &pb.DetachRequest{Id: id, NetnsPath: netnsPath})
	return n.c.callErr(err)
}

// withCallTimeout bounds ctx by callTimeout unless it ends sooner.
func withCallTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, callTimeout)
}

// Attached lists the ids the plugin has attached, for Recover: each a
// sandbox id, or the answer is refused, since a caller may detach them or
// print them. Like Detach, it is asked again once if the plugin turns out
// to have died, and without a deadline in ctx it is bounded by a minute:
// berth's reclaim of dead sandboxes asks it, and a hung plugin must not
// hang that.
func (n *Network) Attached(ctx context.Context) ([]string, error) {
	ctx, cancel := withCallTimeout(ctx)
	defer cancel()
	ids, err := n.list(ctx)
	if errors.Is(err, ErrPluginExited) && ctx.Err() == nil {
		ids, err = n.list(ctx)
	}
	return ids, err
}

func (n *Network) list(ctx context.Context) ([]string, error) {
	cc, err := n.c.conn(ctx)
	if err != nil {
		return nil, err
	}
	r, err := pb.NewNetworkServiceClient(cc).List(ctx, &pb.NetworkServiceListRequest{})
	if err != nil {
		return nil, n.c.callErr(err)
	}
	if err := checkIDs(r.GetIds()); err != nil {
		return nil, fmt.Errorf("plugin %s: %w", n.c.name, err)
	}
	return r.GetIds(), nil
}

// Close stops the plugin; its attachments stay.
func (n *Network) Close() error { return n.c.close() }

// writeInPlace writes data into the file at path, rather than replacing
// it, because a sandbox sees it through a bind mount of that very inode.
func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
