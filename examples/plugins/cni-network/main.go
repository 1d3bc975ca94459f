// Command cni-network is berth's built-in CNI bridge networks served as a
// network plugin: each Attach joins the sandbox to a netplug network (the
// default bridge, or the named network of the setting "network"), with
// its addresses, routes, published ports, DNS settings and peers' names
// sent back through the protocol. It is an example and the reference the
// conformance kit is proven against.
//
// It reads where netplug keeps its networks from the environment it is
// started in (berth starts plugins without arguments, in its own):
// $BERTH_CNI_NETWORK_CONFIG_DIR and $BERTH_CNI_NETWORK_RUN_DIR, netplug's
// own defaults if unset, and $BERTH_CNI_DIR for the CNI plugins. Its own
// records, one file per attached sandbox, are in
// $BERTH_CNI_NETWORK_ROOT (by default /run/berth/plugins/cni-network).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

func main() {
	n, err := newNetwork(env("BERTH_CNI_NETWORK_ROOT", "/run/berth/plugins/cni-network"), &netplug.Options{
		ConfigDir: os.Getenv("BERTH_CNI_NETWORK_CONFIG_DIR"),
		RunDir:    os.Getenv("BERTH_CNI_NETWORK_RUN_DIR"),
		Logger:    plugin.Logger(), // reaches berth's logger
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cni-network:", err)
		os.Exit(1)
	}
	plugin.ServeNetwork(n)
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// idPattern is the protocol's: an id is a name, never a path.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// network attaches through netplug. Its record of an id is written
// before netplug is called and removed after netplug has detached it, so
// whatever a crash interrupts, the id stays known until a Detach has
// undone it all; netplug's own records let that Detach work from the id
// alone.
type network struct {
	root string // records: root/<id>.json
	nets *netplug.Networks
	log  *slog.Logger
}

// record is what the plugin keeps of an attached sandbox.
type record struct {
	Network string `json:"network"`
}

func newNetwork(root string, opts *netplug.Options) (*network, error) {
	log := opts.Logger
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	nets, err := netplug.Open(opts)
	if err != nil {
		return nil, err
	}
	return &network{root: root, nets: nets, log: log}, nil
}

// netplug publishes ports and honours DNS settings.
func (n *network) PublishesPorts() bool { return true }
func (n *network) ConfiguresDNS() bool  { return true }

func (n *network) recordPath(id string) string { return filepath.Join(n.root, id+".json") }

func (n *network) Attach(ctx context.Context, req *plugin.AttachRequest) (_ *plugin.AttachResult, err error) {
	if !idPattern.MatchString(req.ID) {
		return nil, fmt.Errorf("sandbox id %q: %w", req.ID, plugin.ErrInvalid)
	}
	name := req.Options["network"]
	if name == "" {
		name = netplug.DefaultNetwork
	}
	if name == "host" || name == "none" {
		return nil, fmt.Errorf("network %q: not a bridge network: %w", name, plugin.ErrInvalid)
	}
	net, err := n.nets.Get(ctx, name)
	if errors.Is(err, netplug.ErrNotFound) {
		return nil, fmt.Errorf("network %q: %w", name, plugin.ErrInvalid)
	} else if err != nil {
		return nil, err
	}
	rec, _ := json.Marshal(record{Network: name})
	f, err := os.OpenFile(n.recordPath(req.ID), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("sandbox %q: %w", req.ID, plugin.ErrExists)
	} else if err != nil {
		return nil, err
	}
	_, err = f.Write(rec)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	defer func() {
		if err != nil {
			// netplug undoes a failed Attach itself; this also covers
			// one that failed after netplug was done. Not when the id
			// is another program's: its attachment is not ours to undo.
			if !errors.Is(err, netplug.ErrAttached) {
				n.nets.DetachAll(context.WithoutCancel(ctx), req.ID)
			}
			os.Remove(n.recordPath(req.ID))
		}
	}()
	if err != nil {
		return nil, err
	}
	a, err := net.Attach(ctx, req.ID, req.NetnsPath, &netplug.AttachOptions{
		Hostname: req.Hostname,
		Aliases:  req.Aliases,
		Ports:    req.Ports,
		DNS:      req.DNS,
	})
	if errors.Is(err, netplug.ErrAttached) {
		// Attached by another program sharing netplug's directories.
		return nil, fmt.Errorf("sandbox %q: %w: %w", req.ID, plugin.ErrExists, err)
	} else if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		// berth gave up on this Attach and has undone what it could
		// already, maybe before the record existed: undo the rest here.
		return nil, err
	}
	res := &plugin.AttachResult{Attachment: *a}
	if a.Gateway.IsValid() {
		res.Routes = []plugin.Route{{Destination: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gateway: a.Gateway}}
		if a.Gateway.Is6() {
			res.Routes[0].Destination = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
	}
	return res, nil
}

// Detach undoes Attach. netplug enters the namespace at netnsPath only
// if it is still the one attached (it recorded its identity), to take the
// interface out; without it, or once the network is gone, netplug's
// records of the id are enough to free the rest.
func (n *network) Detach(ctx context.Context, id, netnsPath string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("sandbox id %q: %w", id, plugin.ErrInvalid)
	}
	b, err := os.ReadFile(n.recordPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sandbox %q: %w", id, plugin.ErrNotFound)
	} else if err != nil {
		return err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		n.log.Warn("damaged record, detaching from every network", "id", id, "err", err)
	}
	net, err := n.nets.Get(ctx, rec.Network)
	if err == nil {
		err = net.Detach(ctx, id, netnsPath)
	} else {
		err = n.nets.DetachAll(ctx, id)
	}
	if err != nil {
		return err
	}
	return os.Remove(n.recordPath(id))
}

func (n *network) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(n.root)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}
