package plugin

import (
	"context"
	"fmt"
	"os/exec"
	"sync"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// handshake is shared by berth and every plugin: go-plugin refuses a
// program that does not answer with the same cookie (so a plugin run by
// hand says it must be started by berth), and compares protocol versions.
var handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "BERTH_PLUGIN",
	MagicCookieValue: "f3b1c8e2-berth-plugin-protocol",
}

// pluginName is the one name berth's plugins are dispensed by.
const pluginName = "berth"

// grpcPlugin is go-plugin's glue: on the plugin's side it registers the
// services, on the host's it hands over the connection itself, on which
// the storage and network adapters make their own clients.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	register func(*grpc.Server)
}

func (p *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	p.register(s)
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return c, nil
}

// A client keeps one plugin process running for its host-side adapter.
//
// DAY-0 SKELETON: starts the plugin once; restart, Pdeathsig, socket dir,
// logs, checksums and error mapping are to come.
type client struct {
	path string
	kind string
	opts Options

	mu   sync.Mutex
	gp   *goplugin.Client
	cc   *grpc.ClientConn
	info Info
}

// startClient starts the plugin at path, checks that it is of kind, and
// reads its Info.
func startClient(ctx context.Context, path, kind string, opts *Options) (*client, error) {
	c := &client{path: path, kind: kind}
	if opts != nil {
		c.opts = *opts
	}
	if _, err := c.conn(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// conn returns a connection to a running plugin, starting it if need be.
func (c *client) conn(ctx context.Context) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc != nil {
		return c.cc, nil
	}
	gp := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          goplugin.PluginSet{pluginName: &grpcPlugin{}},
		Cmd:              exec.Command(c.path),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
	})
	rpc, err := gp.Client()
	if err != nil {
		gp.Kill()
		return nil, fmt.Errorf("plugin %s: %w", c.path, err)
	}
	raw, err := rpc.Dispense(pluginName)
	if err != nil {
		gp.Kill()
		return nil, fmt.Errorf("plugin %s: %w", c.path, err)
	}
	cc := raw.(*grpc.ClientConn)
	r, err := pb.NewInfoServiceClient(cc).Info(ctx, &pb.InfoRequest{})
	if err != nil {
		gp.Kill()
		return nil, fmt.Errorf("plugin %s: info: %w", c.path, err)
	}
	if r.GetKind() != c.kind {
		gp.Kill()
		return nil, fmt.Errorf("plugin %s is a %s plugin, not a %s one: %w", c.path, r.GetKind(), c.kind, ErrWrongKind)
	}
	c.info = Info{Path: c.path, Kind: r.GetKind(), Name: r.GetName(), Version: r.GetVersion(),
		Protocol: gp.NegotiatedVersion(), Capabilities: r.GetCapabilities(), Roots: r.GetRoots()}
	c.gp, c.cc = gp, cc
	return cc, nil
}

// callErr turns the error of a call on the plugin into berth's: the
// sentinels the plugin meant, ErrPluginExited if it died.
func (c *client) callErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("plugin %s: %w", c.path, err)
}

// close stops the plugin.
func (c *client) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gp != nil {
		c.gp.Kill()
		c.gp, c.cc = nil, nil
	}
	return nil
}
