package plugin

import (
	"context"
	"errors"

	"google.golang.org/grpc"

	"github.com/berth-dev/berth/netplug"
)

// Network is a network plugin seen from the host: it satisfies
// sandbox.Network.
//
// DAY-0 SKELETON: the methods are to come.
type Network struct {
	c *client
}

// OpenNetwork starts the network plugin at path. Close stops it.
func OpenNetwork(ctx context.Context, path string, opts *Options) (*Network, error) {
	c, err := startClient(ctx, path, KindNetwork, opts)
	if err != nil {
		return nil, err
	}
	return &Network{c: c}, nil
}

// Info describes the plugin.
func (n *Network) Info() Info { return n.c.Info() }

// Attach has the plugin connect the namespace at netnsPath and checks
// what it says it did.
func (n *Network) Attach(ctx context.Context, id, netnsPath string, opts *netplug.AttachOptions) (*netplug.Attachment, error) {
	return nil, errors.ErrUnsupported
}

// Detach has the plugin undo Attach.
func (n *Network) Detach(ctx context.Context, id, netnsPath string) error {
	return errors.ErrUnsupported
}

// Attached lists the ids the plugin has attached, for Recover.
func (n *Network) Attached(ctx context.Context) ([]string, error) {
	return nil, errors.ErrUnsupported
}

// Close stops the plugin; its attachments stay.
func (n *Network) Close() error { return n.c.close() }

// registerNetwork registers impl's NetworkService on s.
func registerNetwork(s *grpc.Server, impl NetworkPlugin) {}
