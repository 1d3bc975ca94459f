package netplug

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/coreos/go-iptables/iptables"

	"github.com/berth-dev/berth/internal/clip"
)

// Networks manages the bridge networks of one state directory: the
// default one and named ones that sandboxes join to reach each other by
// name. Open it with Open.
type Networks struct {
	opts Options
	log  *slog.Logger
	cni  *libcni.CNIConfig
	exec invoke.Exec
	def  *NetworkInfo

	// iptables is IPv4's, made on first use: making it runs iptables.
	iptables func() (*iptables.IPTables, error)
}

// Open returns the networks kept in opts' directories, creating the
// directories if need be. A nil opts means the defaults.
func Open(opts *Options) (*Networks, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{o.ConfigDir, o.RunDir, filepath.Join(o.RunDir, "attachments"), filepath.Join(o.RunDir, "locks")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("netplug: %w", err)
		}
	}
	def, _ := o.Default.info(DefaultNetwork)
	def.Default = true
	n := &Networks{opts: o, log: o.Logger, def: def}
	// The exec is set here rather than left to libcni, which would set it
	// lazily on first use: a data race when sandboxes attach at once.
	n.exec = pluginExec{Exec: &boundExec{stderr: logWriter{n.log}}, log: n.log}
	n.iptables = sync.OnceValues(func() (*iptables.IPTables, error) {
		return iptables.NewWithProtocol(iptables.ProtocolIPv4)
	})
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{o.PluginDir}, filepath.Join(o.RunDir, "cache"), n.exec)
	return n, nil
}

// Bridge returns the default bridge network, DefaultNetwork, with the
// state directories and settings of opts (nil means the defaults).
func Bridge(opts *Options) (Network, error) {
	n, err := Open(opts)
	if err != nil {
		return nil, err
	}
	return n.network(n.def), nil
}

// Lock files in RunDir/locks, and what they guard:
//
//   - "state": held shared by every Attach and Detach, exclusively by
//     Remove and Prune, which must not run under an attachment.
//   - "config": exclusive while a network is created or removed, so that
//     names, bridges and subnets stay unique.
//   - "ports": exclusive while an attachment claims host ports and
//     creates its record; short, and not held while plugins run.
//   - "hosts-<network>": exclusive while a named network's records and
//     hosts files are updated; short too.
//
// They are taken in that order. sharedChainsLock is a host-wide one,
// because the CNI plugins' shared iptables chains are host-wide: held
// shared by Attach and Detach, exclusively by Prune when it removes them.
// Last comes chainSetupLock (in host.go), host-wide too, which an Attach
// holds while its plugins create those chains, and then filterSetupLock
// (in filter.go), which it holds while it makes berth's nftables tables.
const sharedChainsLock = "/run/lock/berth-netplug.lock"

func (n *Networks) lockPath(name string) string {
	return filepath.Join(n.opts.RunDir, "locks", name+".lock")
}

// lockState takes the state lock and the shared chains lock, shared or
// exclusive, and returns the function that releases both.
func (n *Networks) lockState(ctx context.Context, exclusive bool) (func(), error) {
	_, unlock, err := n.lockStateFile(ctx, exclusive)
	return unlock, err
}

// lockStateFile is lockState that also returns the state lock itself, for
// an Attach to hand to its plugins (see boundExec).
func (n *Networks) lockStateFile(ctx context.Context, exclusive bool) (*fileLock, func(), error) {
	lock := lockShared
	if exclusive {
		lock = lockExclusive
	}
	state, err := lock(ctx, n.lockPath("state"))
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(sharedChainsLock), 0o755); err != nil {
		state.Unlock()
		return nil, nil, err
	}
	chains, err := lock(ctx, sharedChainsLock)
	if err != nil {
		state.Unlock()
		return nil, nil, err
	}
	return state, func() { chains.Unlock(); state.Unlock() }, nil
}

// Get returns the network called name: "none", "host", DefaultNetwork
// (also called "bridge") or a named network. The Network stays usable
// until the named network is removed; Attach then fails with ErrNotFound.
func (n *Networks) Get(ctx context.Context, name string) (Network, error) {
	switch name {
	case "none":
		return None(), nil
	case "host":
		return Host(), nil
	case DefaultNetwork, "bridge":
		return n.network(n.def), nil
	}
	info, err := n.readInfo(name)
	if err != nil {
		return nil, err
	}
	return n.network(info), nil
}

func isReserved(name string) bool {
	switch name {
	case "none", "host", "bridge", "default", DefaultNetwork:
		return true
	}
	return false
}

func (n *Networks) configPath(name string) string {
	return filepath.Join(n.opts.ConfigDir, name+".json")
}

func (n *Networks) readInfo(name string) (*NetworkInfo, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("network %s: %w", clip.Quote(name), ErrNotFound)
	}
	data, err := os.ReadFile(n.configPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("network %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("network %q: %w", name, err)
	}
	var info NetworkInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("network %q: %w", name, err)
	}
	if info.Name != name {
		return nil, fmt.Errorf("network %q: definition names %q", name, info.Name)
	}
	return &info, nil
}

// infos returns the default network and every named one.
func (n *Networks) infos() ([]*NetworkInfo, error) {
	paths, err := filepath.Glob(filepath.Join(n.opts.ConfigDir, "*.json"))
	if err != nil {
		return nil, err
	}
	def := *n.def
	infos := []*NetworkInfo{&def}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		info, err := n.readInfo(name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			n.log.Warn("skipping unreadable network definition", "path", p, "err", err)
			continue
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// Create defines a named bridge network. Its bridge is made when the
// first sandbox attaches.
func (n *Networks) Create(ctx context.Context, name string, opts *NetworkOptions) (Network, error) {
	if isReserved(name) {
		return nil, fmt.Errorf("network %q: %w", name, ErrReserved)
	}
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("%w: network name %s: want 1 to 63 of a-z 0-9 _ . - starting with a letter or digit", ErrInvalid, clip.Quote(name))
	}
	var o NetworkOptions
	if opts != nil {
		o = *opts
	}
	if o.Bridge == "" {
		o.Bridge = bridgeName(name)
	}
	l, err := lockExclusive(ctx, n.lockPath("config"))
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	existing, err := n.infos()
	if err != nil {
		return nil, err
	}
	for _, e := range existing {
		if e.Name == name {
			return nil, fmt.Errorf("network %q: %w", name, ErrExists)
		}
		if e.Bridge == o.Bridge {
			return nil, fmt.Errorf("%w: bridge %s is network %q's", ErrInvalid, o.Bridge, e.Name)
		}
		if o.Subnet.IsValid() && o.Subnet.Overlaps(e.Subnet) {
			return nil, fmt.Errorf("%w: subnet %s overlaps network %q's %s", ErrInvalid, o.Subnet, e.Name, e.Subnet)
		}
	}
	if !o.Subnet.IsValid() {
		if o.Subnet, err = freeSubnet(existing); err != nil {
			return nil, err
		}
	}
	info, err := o.info(name)
	if err != nil {
		return nil, err
	}
	info.Created = time.Now().UTC()
	data, err := json.MarshalIndent(info, "", "\t")
	if err != nil {
		return nil, err
	}
	if err := writeDefinition(n.configPath(name), append(data, '\n')); err != nil {
		return nil, fmt.Errorf("create network %q: %w", name, err)
	}
	n.log.Info("network created", "network", name, "bridge", info.Bridge, "subnet", info.Subnet)
	return n.network(info), nil
}

// bridgeName is berth-<name>, or berth-<hash of name> when that would not
// fit the 15 bytes an interface name may have.
func bridgeName(name string) string {
	if b := "berth-" + name; len(b) <= 15 {
		return b
	}
	sum := sha256.Sum256([]byte(name))
	return "berth-" + hex.EncodeToString(sum[:])[:9]
}

// freeSubnet returns the first /24 of namedSubnets that overlaps neither a
// network nor a route of the host.
func freeSubnet(existing []*NetworkInfo) (netip.Prefix, error) {
	taken := hostRoutes()
	for _, e := range existing {
		taken = append(taken, e.Subnet)
	}
	pool := netip.MustParsePrefix(namedSubnets)
	for p := netip.PrefixFrom(pool.Addr(), 24); pool.Contains(p.Addr()); {
		if !slices.ContainsFunc(taken, p.Overlaps) {
			return p, nil
		}
		a := p.Addr().As4()
		a[2]++
		if a[2] == 0 {
			break
		}
		p = netip.PrefixFrom(netip.AddrFrom4(a), 24)
	}
	return netip.Prefix{}, fmt.Errorf("%w in %s", ErrNoSubnet, namedSubnets)
}

// List returns the default network and the named ones, by name, each with
// the sandboxes attached.
func (n *Networks) List(ctx context.Context) ([]NetworkInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	infos, err := n.infos()
	if err != nil {
		return nil, err
	}
	out := make([]NetworkInfo, 0, len(infos))
	for _, info := range sortedInfos(infos) {
		recs, err := n.records(info.cniName())
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			info.Sandboxes = append(info.Sandboxes, r.ID)
		}
		slices.Sort(info.Sandboxes)
		out = append(out, *info)
	}
	return out, nil
}

// Remove deletes the named network and its bridge. It fails with ErrInUse
// while sandboxes are attached, and waits for attachments in progress.
func (n *Networks) Remove(ctx context.Context, name string) error {
	if isReserved(name) {
		return fmt.Errorf("network %q: %w", name, ErrReserved)
	}
	unlock, err := n.lockState(ctx, true)
	if err != nil {
		return err
	}
	defer unlock()
	l, err := lockExclusive(ctx, n.lockPath("config"))
	if err != nil {
		return err
	}
	defer l.Unlock()
	info, err := n.readInfo(name)
	if err != nil {
		return err
	}
	recs, err := n.records(info.cniName())
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
		}
		return fmt.Errorf("network %q: %w by %s", name, ErrInUse, strings.Join(ids, ", "))
	}
	if err := n.removeNetworkState(info); err != nil {
		return fmt.Errorf("remove network %q: %w", name, err)
	}
	if err := os.Remove(n.configPath(name)); err != nil {
		return fmt.Errorf("remove network %q: %w", name, err)
	}
	n.log.Info("network removed", "network", name)
	return nil
}

// removeNetworkState deletes what attachments to a network left behind
// them once none is left: its IPAM and record directories, and its bridge
// unless another RunDir's sandboxes use it (ErrInUse). The caller holds
// the state lock exclusively.
func (n *Networks) removeNetworkState(info *NetworkInfo) error {
	for _, p := range []string{
		filepath.Join(n.opts.RunDir, "ipam", info.cniName()),
		n.attachmentsDir(info.cniName()),
		n.lockPath("hosts-" + info.cniName()),
	} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return deleteBridge(info.Bridge)
}

// Hosts returns the sandboxes attached to the named network, as
// /etc/hosts entries. The default network shares no names: none.
func (n *Networks) Hosts(ctx context.Context, name string) ([]HostEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if name == DefaultNetwork || name == "bridge" {
		return nil, nil
	}
	info, err := n.readInfo(name)
	if err != nil {
		return nil, err
	}
	recs, err := n.records(info.cniName())
	if err != nil {
		return nil, err
	}
	return peers(recs, ""), nil
}

// DetachAll detaches the sandbox id from every network it is attached to,
// from the records alone: what berth's garbage collection calls for a
// sandbox that is gone. It waits for attachments in progress, and so
// for the plugins of an Attach whose program died (see boundExec), which
// could otherwise set up what it undoes after it has undone it.
func (n *Networks) DetachAll(ctx context.Context, id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w: sandbox ID %q", ErrInvalid, id)
	}
	unlock, err := n.lockState(ctx, true)
	if err != nil {
		return err
	}
	defer unlock()
	paths, err := filepath.Glob(filepath.Join(n.opts.RunDir, "attachments", "*", id+".json"))
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range paths {
		cniName := filepath.Base(filepath.Dir(p))
		errs = append(errs, n.detach(ctx, cniName, id, ""))
	}
	return errors.Join(errs...)
}

// Prune removes what netplug's attachments left that nothing uses:
// attachments whose namespace is gone (a crashed program's, never
// detached), libcni's cache entries of attachments without a record, the
// bridges of networks without attachments, and the CNI plugins' shared
// iptables chains once no rule of any sandbox is in them. It waits for
// attachments in progress, and for the plugins of one whose program died
// (see boundExec).
func (n *Networks) Prune(ctx context.Context) error {
	unlock, err := n.lockState(ctx, true)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	recs, err := n.records("")
	if err != nil {
		return err
	}
	for _, r := range recs {
		if id, err := identify(r.NetNS); err == nil && id == r.NS {
			continue
		}
		n.log.Info("detaching a sandbox whose namespace is gone", "id", r.ID, "network", r.Network)
		errs = append(errs, n.detach(ctx, r.CNIName, r.ID, ""))
	}
	errs = append(errs, n.pruneCache())
	infos, err := n.infos()
	if err != nil {
		return err
	}
	for _, info := range infos {
		left, err := n.records(info.cniName())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(left) > 0 {
			continue
		}
		if err := n.removeNetworkState(info); errors.Is(err, ErrInUse) {
			n.log.Info("keeping a bridge in use", "network", info.Name, "err", err)
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, pruneSharedChains(n.log))
	if err := pruneFilters(); err != nil {
		n.log.Warn("prune berth's packet filters", "err", err)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pluginExec runs plugins as libcni's default does, and also logs how
// long each run takes, at debug level (the plugins are most of what an
// attachment costs), and hands the result of each successful ADD to the
// resultSink in the context, if any.
type pluginExec struct {
	invoke.Exec
	log *slog.Logger
}

func (e pluginExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	start := time.Now()
	out, err := e.Exec.ExecPlugin(ctx, path, stdin, env)
	cmd := ""
	for _, v := range env {
		if c, ok := strings.CutPrefix(v, "CNI_COMMAND="); ok {
			cmd = c
		}
	}
	if sink, ok := ctx.Value(resultSinkKey{}).(resultSink); ok && err == nil && cmd == "ADD" {
		sink(out)
	}
	e.log.Debug("CNI plugin run", "plugin", filepath.Base(path), "command", cmd, "took", time.Since(start), "err", err)
	return out, err
}

// A resultSink receives the result of each plugin that succeeds in an ADD
// of a list, in order.
type resultSink func(result []byte)

type resultSinkKey struct{}

// logWriter passes what plugins write to stderr to the log.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Warn("CNI plugin", "stderr", strings.TrimSpace(string(p)))
	return len(p), nil
}
