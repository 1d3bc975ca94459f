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

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/netplug"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// undoTimeout bounds the Detach berth sends after an Attach it does not
// keep, which runs whatever the caller's context has become.
const undoTimeout = 10 * time.Second

// Network is a network plugin seen from the host: it satisfies
// sandbox.Network, so a sandbox uses it as it would a netplug network.
// It is safe for concurrent use.
type Network struct {
	c        *client
	settings map[string]string
}

// OpenNetwork starts the network plugin at path. Close stops it.
func OpenNetwork(ctx context.Context, path string, opts *Options) (*Network, error) {
	c, err := startClient(ctx, path, KindNetwork, opts)
	if err != nil {
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
// An answer berth refuses, and any failure but ErrExists, is undone with
// a Detach before Attach returns, so a failed Attach leaves nothing for
// the caller to undo, even if the plugin died during it.
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
	a, err := n.attach(ctx, req, ns)
	if err != nil {
		if !errors.Is(err, ErrExists) {
			n.undo(ctx, id, netnsPath, err)
		}
		return nil, fmt.Errorf("attach %s: %w", clip.Quote(id), err)
	}
	if opts != nil && opts.HostsFile != "" {
		names := append([]string{opts.Hostname}, opts.Aliases...)
		hosts := &netplug.Attachment{Network: a.Network, IPs: a.IPs, Hosts: append(slices.Clone(a.Hosts), opts.ExtraHosts...)}
		if err := writeInPlace(opts.HostsFile, netplug.HostsFile(hosts, names...)); err != nil {
			n.undo(ctx, id, netnsPath, err)
			return nil, fmt.Errorf("attach %s: hosts file: %w", clip.Quote(id), err)
		}
	}
	return a, nil
}

// attach makes the call and checks its answer.
func (n *Network) attach(ctx context.Context, req *pb.AttachRequest, ns *netnsFile) (*netplug.Attachment, error) {
	cc, err := n.c.conn(ctx)
	if err != nil {
		return nil, err
	}
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

// undo detaches an attachment berth does not keep. It is best effort:
// the plugin may have made nothing (ErrNotFound), or died, in which case
// the Detach starts it again and the new process undoes what the old one
// did, from the id alone as the protocol requires.
func (n *Network) undo(ctx context.Context, id, netnsPath string, why error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	err := n.Detach(ctx, id, netnsPath)
	if err != nil && !errors.Is(err, ErrNotFound) {
		n.c.log.Warn("undo a failed attach", "id", id, "attach_err", why, "err", err)
	}
}

// Detach has the plugin undo Attach of sandbox id. netnsPath is the path
// Attach was given; the namespace may be gone by then, and the plugin
// must manage from the id alone. An id the plugin does not know is an
// error wrapping ErrNotFound.
func (n *Network) Detach(ctx context.Context, id, netnsPath string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("detach %s: sandbox id: %w", clip.Quote(id), ErrInvalid)
	}
	cc, err := n.c.conn(ctx)
	if err != nil {
		return fmt.Errorf("detach %s: %w", clip.Quote(id), err)
	}
	_, err = pb.NewNetworkServiceClient(cc).Detach(ctx, &pb.DetachRequest{Id: id, NetnsPath: netnsPath})
	if err != nil {
		return fmt.Errorf("detach %s: %w", clip.Quote(id), n.c.callErr(err))
	}
	return nil
}

// Attached lists the ids the plugin has attached, for Recover.
func (n *Network) Attached(ctx context.Context) ([]string, error) {
	cc, err := n.c.conn(ctx)
	if err != nil {
		return nil, err
	}
	r, err := pb.NewNetworkServiceClient(cc).List(ctx, &pb.NetworkServiceListRequest{})
	if err != nil {
		return nil, n.c.callErr(err)
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
