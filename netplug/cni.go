package netplug

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"golang.org/x/sys/unix"
)

// The interface a sandbox gets in its namespace.
const ifName = "eth0"

// cleanupTimeout bounds the undoing of a failed or abandoned Attach, which
// runs even when the Attach's context has ended.
const cleanupTimeout = time.Minute

// A cniNetwork is a network made by CNI plugins: a bridge network (the
// default one or a named one) or a Custom configuration.
type cniNetwork struct {
	nets   *Networks
	info   *NetworkInfo              // bridge networks
	custom *libcni.NetworkConfigList // Custom networks
}

func (n *Networks) network(info *NetworkInfo) *cniNetwork {
	return &cniNetwork{nets: n, info: info}
}

// Custom returns a network made by the CNI configuration list confList
// (a .conflist's content), with the state directories of opts (nil means
// the defaults). Its plugins are looked up in the plugin directory only.
// A host-local IPAM or tuning plugin without a dataDir gets one in RunDir.
// The list's name must not start with "berth", which bridge networks use.
func Custom(confList []byte, opts *Options) (Network, error) {
	n, err := Open(opts)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(confList)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !idRE.MatchString(list.Name) || strings.HasPrefix(list.Name, "berth") {
		return nil, fmt.Errorf("%w: CNI network name %q: want a-z A-Z 0-9 _ . -, not starting with berth", ErrInvalid, list.Name)
	}
	if list, err = n.adopt(list); err != nil {
		return nil, err
	}
	return &cniNetwork{nets: n, custom: list}, nil
}

// adopt gives a custom list's stateful plugins directories under RunDir,
// so that their state is found with the rest of berth's.
func (n *Networks) adopt(list *libcni.NetworkConfigList) (*libcni.NetworkConfigList, error) {
	var raw map[string]any
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	plugins, _ := raw["plugins"].([]any)
	for _, p := range plugins {
		p, _ := p.(map[string]any)
		if p == nil {
			continue
		}
		if p["type"] == "tuning" && p["dataDir"] == nil {
			p["dataDir"] = filepath.Join(n.opts.RunDir, "tuning")
		}
		if ipam, _ := p["ipam"].(map[string]any); ipam != nil && ipam["type"] == "host-local" && ipam["dataDir"] == nil {
			ipam["dataDir"] = filepath.Join(n.opts.RunDir, "ipam")
		}
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(data)
}

func (c *cniNetwork) name() string {
	if c.custom != nil {
		return c.custom.Name
	}
	return c.info.Name
}

func (c *cniNetwork) cniName() string {
	if c.custom != nil {
		return c.custom.Name
	}
	return c.info.cniName()
}

// named reports whether sandboxes on the network know each other's names.
func (c *cniNetwork) named() bool { return c.info != nil && !c.info.Default }

// String returns the network's name.
func (c *cniNetwork) String() string { return c.name() }

// Attach implements Network.
func (c *cniNetwork) Attach(ctx context.Context, id, netnsPath string, opts *AttachOptions) (*Attachment, error) {
	if opts == nil {
		opts = &AttachOptions{}
	}
	start := time.Now()
	a, err := c.attach(ctx, id, netnsPath, opts)
	if err != nil {
		return nil, fmt.Errorf("attach %s to network %s: %w", id, c.name(), withContext(ctx, err))
	}
	c.nets.log.Debug("attached", "id", id, "network", c.name(), "ips", a.IPs, "took", time.Since(start))
	return a, nil
}

func (c *cniNetwork) attach(ctx context.Context, id, netnsPath string, opts *AttachOptions) (*Attachment, error) {
	n := c.nets
	if !idRE.MatchString(id) {
		return nil, fmt.Errorf("%w: sandbox ID %q", ErrInvalid, id)
	}
	nsid, err := identifyNetNS(netnsPath)
	if err != nil {
		return nil, err
	}
	if isHostNetNS(nsid) {
		return nil, fmt.Errorf("%w: %s", ErrHostNamespace, netnsPath)
	}
	ports, err := normalizePorts(opts.Ports)
	if err != nil {
		return nil, err
	}
	dns, err := c.dns(opts)
	if err != nil {
		return nil, err
	}

	stateLock, unlock, err := n.lockStateFile(ctx, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if c.named() {
		// Removed since Get? Remove cannot run now that the lock is held.
		if _, err := n.readInfo(c.info.Name); err != nil {
			return nil, err
		}
	}
	list, err := c.confList(len(ports) > 0)
	if err != nil {
		return nil, err
	}
	if len(ports) > 0 && !hasCapability(list, "portMappings") {
		return nil, fmt.Errorf("%w: no plugin of network %s publishes ports", ErrInvalid, c.name())
	}
	if err := n.checkPlugins(list); err != nil {
		return nil, err
	}

	rec := &record{
		ID: id, Network: c.name(), CNIName: c.cniName(), IfName: ifName,
		NetNS: netnsPath, NS: nsid, Config: list.Bytes, Named: c.named(),
		Hostname: opts.Hostname, Aliases: slices.Clone(opts.Aliases),
		HostsFile: opts.HostsFile, ExtraHosts: slices.Clone(opts.ExtraHosts), Created: time.Now().UTC(),
	}
	// The record is made before the plugins run: from here on, anything
	// that fails, or a crash, is undone from it.
	if err := n.claim(ctx, rec, ports); err != nil {
		return nil, err
	}
	undo := func(cause error) error {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := n.detach(dctx, rec.CNIName, id, netnsPath); err != nil {
			n.log.Error("undo a failed attachment", "id", id, "network", rec.Network, "err", err)
			return errors.Join(cause, err)
		}
		return cause
	}

	// DEL finds a plugin's work through the plugin's result. So each
	// result goes into the record as soon as it comes (a write on tmpfs,
	// little next to a plugin run), for DEL to find even after a crash;
	// and the plugins run to their end even if ctx ends meanwhile, their
	// work undone then, since one killed half-way returns no result.
	// cleanupTimeout bounds a hung plugin.
	sink := resultSink(func(result []byte) {
		rec.Result = slices.Clone(result)
		if r, err := create.CreateFromBytes(result); err == nil {
			rec.IPs, rec.Gateway, _ = resultAddrs(r)
		}
		if err := n.writeRecord(rec, rec.CNIName, false); err != nil {
			n.log.Warn("record a plugin's result", "id", id, "network", rec.Network, "err", err)
		}
	})
	setupDone, err := n.awaitSharedChains(ctx, list, len(ports) > 0)
	if err != nil {
		return nil, undo(err)
	}
	actx := context.WithValue(context.WithoutCancel(ctx), resultSinkKey{}, sink)
	if c.info != nil {
		// The plugins hold the state lock with this Attach, and beyond
		// it if it dies (see boundExec). Only berth's own plugins: a
		// Custom list's might start a daemon, which would then hold it
		// for good.
		actx = withPluginLock(actx, stateLock)
	}
	actx, cancel := context.WithTimeout(actx, cleanupTimeout)
	res, err := n.cni.AddNetworkList(actx, list, runtimeConf(rec, netnsPath))
	cancel()
	setupDone()
	if err != nil {
		return nil, undo(pluginError(err))
	}
	if err := ctx.Err(); err != nil {
		return nil, undo(err)
	}
	if rec.IPs, rec.Gateway, err = resultAddrs(res); err != nil {
		return nil, undo(err)
	}
	if c.info != nil {
		if err := n.filterPort(ctx, rec, res, c.info.Bridge); err != nil {
			return nil, undo(err)
		}
	}
	hosts, err := n.commit(ctx, rec.CNIName, rec.Named, rec, "")
	if err != nil {
		return nil, undo(err)
	}
	return &Attachment{
		Network:   rec.Network,
		Interface: ifName,
		IPs:       slices.Clone(rec.IPs),
		Gateway:   rec.Gateway,
		Ports:     slices.Clone(rec.Ports),
		Hosts:     hosts,
		DNS:       dns,
	}, nil
}

// filterPort installs the packet filter of the sandbox's port on a
// bridge network. The port goes into the record first, for Detach to
// find the filter even after a crash.
func (n *Networks) filterPort(ctx context.Context, rec *record, res types.Result, bridge string) error {
	f, portMAC, err := portFilterOf(res, bridge, rec.IPs)
	if err != nil {
		return err
	}
	rec.Port, rec.PortMAC = f.Port, portMAC.String()
	if err := n.writeRecord(rec, rec.CNIName, false); err != nil {
		return err
	}
	return installPortFilter(ctx, f)
}

// Detach implements Network.
func (c *cniNetwork) Detach(ctx context.Context, id, netnsPath string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w: sandbox ID %q", ErrInvalid, id)
	}
	unlock, err := c.nets.lockState(ctx, false)
	if err != nil {
		return err
	}
	defer unlock()
	return withContext(ctx, c.nets.detach(ctx, c.cniName(), id, netnsPath))
}

// withContext makes an error caused by the end of ctx (a plugin killed)
// match ctx's error for errors.Is.
func withContext(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return err
}

// detach undoes the attachment of id to the CNI network cniName, as its
// record says, and forgets it. Without a record there is nothing to undo.
// The caller holds the state lock.
func (n *Networks) detach(ctx context.Context, cniName, id, netnsPath string) error {
	start := time.Now()
	rec, err := readRecord(n.recordPath(cniName, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return n.detachDamaged(ctx, cniName, id, err)
	}
	// The plugins enter the namespace only if it is still the one that was
	// attached. /proc/<pid>/ns/net of a dead sandbox may name another
	// process's namespace now, maybe the host's, whose eth0 the bridge
	// plugin would delete.
	netns := ""
	for _, p := range []string{netnsPath, rec.NetNS} {
		if p == "" {
			continue
		}
		if got, err := identify(p); err == nil && got == rec.NS {
			netns = p
			break
		}
	}
	list, err := libcni.ConfListFromBytes(rec.Config)
	if err != nil {
		return fmt.Errorf("detach %s: record of network %s: %w", id, rec.Network, err)
	}
	rt := runtimeConf(rec, netns)
	cached, err := n.cni.GetNetworkListCachedResult(list, rt)
	if err != nil {
		n.log.Warn("unreadable CNI cache entry", "id", id, "network", rec.Network, "err", err)
		cached = nil
	}
	ips := rec.IPs
	if len(ips) == 0 && cached != nil {
		ips, _, _ = resultAddrs(cached)
	}
	prev := rec.Result
	if len(ips) == 0 && cached == nil && len(prev) == 0 {
		// Killed before any plugin's result was recorded, while the
		// plugins went on or after they were done: the addresses IPAM
		// leased, or those the masquerading rules name, are all there is
		// to find their work by (the firewall plugin's rules name the
		// sandbox's address alone).
		ips = n.leasedAddrs(list.Name, id)
		if len(ips) == 0 && masqueradeBackend(list) == "iptables" {
			ips = n.masqueradedAddrs(list.Name, id)
		}
		if len(ips) > 0 {
			if prev, err = leaseResult(list.CNIVersion, ips, netns); err != nil {
				n.log.Warn("a result from IPAM's leases", "id", id, "network", rec.Network, "err", err)
				prev = nil
			}
		}
	}
	if cached == nil && len(prev) > 0 {
		err = n.delWithResult(ctx, list, rt, prev)
		// DelNetworkList removes libcni's cache entry, delWithResult does
		// not.
		if err == nil {
			if err := n.forgetCached(list.Name, id, rec.IfName); err != nil {
				return fmt.Errorf("detach %s from network %s: %w", id, rec.Network, err)
			}
		}
	} else {
		err = n.cni.DelNetworkList(ctx, list, rt)
	}
	if err != nil {
		return fmt.Errorf("detach %s from network %s: %w", id, rec.Network, pluginError(err))
	}
	if rec.Port != "" {
		mac, _ := net.ParseMAC(rec.PortMAC)
		if err := removePortFilter(rec.Port, mac); err != nil {
			return fmt.Errorf("detach %s from network %s: %w", id, rec.Network, err)
		}
	}
	// Without the namespace, or when the sandbox deleted its interface,
	// the bridge plugin cannot tell which masquerading rules were the
	// sandbox's, and leaves them.
	if masqueradeBackend(list) == "iptables" {
		if err := n.teardownMasquerade(ctx, list.Name, id, ips, netns == ""); err != nil {
			return fmt.Errorf("detach %s from network %s: %w", id, rec.Network, err)
		}
	}
	if _, err := n.commit(ctx, cniName, rec.Named, nil, id); err != nil {
		return fmt.Errorf("detach %s from network %s: %w", id, rec.Network, err)
	}
	n.log.Debug("detached", "id", id, "network", rec.Network, "netns", netns != "", "took", time.Since(start))
	return nil
}

// delWithResult runs DEL as libcni's DelNetworkList does, every plugin in
// reverse order, but with prevResult the given result rather than the
// cached one of a whole list, which a failed ADD does not leave.
func (n *Networks) delWithResult(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf, result json.RawMessage) error {
	var prev map[string]any
	if err := json.Unmarshal(result, &prev); err != nil {
		return fmt.Errorf("partial result: %w", err)
	}
	args := &invoke.Args{
		Command: "DEL", ContainerID: rt.ContainerID, NetNS: rt.NetNS, IfName: rt.IfName,
		Path: strings.Join(n.cni.Path, string(os.PathListSeparator)),
	}
	var errs []error
	for i := len(list.Plugins) - 1; i >= 0; i-- {
		p := list.Plugins[i]
		inject := map[string]any{"name": list.Name, "cniVersion": list.CNIVersion, "prevResult": prev}
		rc := map[string]any{}
		for c, ok := range p.Network.Capabilities {
			if v, has := rt.CapabilityArgs[c]; ok && has {
				rc[c] = v
			}
		}
		if len(rc) > 0 {
			inject["runtimeConfig"] = rc
		}
		conf, err := libcni.InjectConf(p, inject)
		if err == nil {
			var path string
			if path, err = invoke.FindInPath(p.Network.Type, n.cni.Path); err == nil {
				err = invoke.ExecPluginWithoutResult(ctx, path, conf.Bytes, args, n.exec)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("plugin %s (delete): %w", p.Network.Type, pluginError(err)))
		}
	}
	return errors.Join(errs...)
}

// leaseResult makes the result DEL gets as its prevResult when nothing
// but IPAM's leases, ips, says what the plugins did: the sandbox's
// interface, with those addresses.
func leaseResult(cniVersion string, ips []netip.Prefix, netns string) (json.RawMessage, error) {
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: ifName, Sandbox: netns}},
	}
	for _, p := range ips {
		sandbox := 0
		r.IPs = append(r.IPs, &current.IPConfig{
			Interface: &sandbox,
			Address:   net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		})
	}
	converted, err := r.GetAsVersion(cniVersion)
	if err != nil {
		return nil, err
	}
	return json.Marshal(converted)
}

func runtimeConf(rec *record, netns string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: rec.ID, NetNS: netns, IfName: rec.IfName}
	if len(rec.Ports) > 0 {
		// PortMapping's JSON is CNI's portMappings convention.
		rt.CapabilityArgs = map[string]any{"portMappings": rec.Ports}
	}
	return rt
}

// confList returns the configuration the plugins run with: for a bridge
// network, generated for this attachment (portmap only when ports are
// published: one plugin run less otherwise).
func (c *cniNetwork) confList(ports bool) (*libcni.NetworkConfigList, error) {
	if c.custom != nil {
		return c.custom, nil
	}
	info, dir := c.info, c.nets.opts.RunDir
	ipam := map[string]any{
		"type":    "host-local",
		"dataDir": filepath.Join(dir, "ipam"),
		"ranges":  [][]map[string]string{{{"subnet": info.Subnet.String(), "gateway": info.Gateway.String()}}},
	}
	if !info.Internal {
		ipam["routes"] = []map[string]string{{"dst": "0.0.0.0/0"}}
	}
	bridge := map[string]any{
		"type":      "bridge",
		"bridge":    info.Bridge,
		"isGateway": true,
		"ipMasq":    !info.Internal,
		// Explicit, so that Detach knows which rules to look for.
		"ipMasqBackend": "iptables",
		// A sandbox can reach its own published ports.
		"hairpinMode": true,
		"ipam":        ipam,
	}
	if info.MTU > 0 {
		bridge["mtu"] = info.MTU
	}
	plugins := []any{bridge}
	if ports {
		plugins = append(plugins, map[string]any{
			"type":         "portmap",
			"capabilities": map[string]bool{"portMappings": true},
			"backend":      "iptables",
			// Masquerade connections from the host's loopback, and set
			// route_localnet on the bridge, so that 127.0.0.1:port works.
			"snat": true,
		})
	}
	// Accept the sandboxes' forwarded traffic where the FORWARD policy is
	// DROP, as on hosts with Docker.
	plugins = append(plugins, map[string]any{"type": "firewall", "backend": "iptables"})
	if len(info.Sysctls) > 0 {
		plugins = append(plugins, map[string]any{
			"type": "tuning", "sysctl": info.Sysctls, "dataDir": filepath.Join(dir, "tuning"),
		})
	}
	data, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": info.cniName(), "plugins": plugins})
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(data)
}

func hasCapability(list *libcni.NetworkConfigList, capability string) bool {
	for _, p := range list.Plugins {
		if p.Network.Capabilities[capability] {
			return true
		}
	}
	return false
}

// masqueradeBackend returns the backend of the list's masquerading bridge
// plugin, or "" if no plugin masquerades.
func masqueradeBackend(list *libcni.NetworkConfigList) string {
	for _, p := range list.Plugins {
		if p.Network.Type != "bridge" {
			continue
		}
		var conf struct {
			IPMasq        bool   `json:"ipMasq"`
			IPMasqBackend string `json:"ipMasqBackend"`
		}
		if json.Unmarshal(p.Bytes, &conf) == nil && conf.IPMasq {
			return cmp.Or(conf.IPMasqBackend, "iptables")
		}
	}
	return ""
}

// checkPlugins makes sure every plugin the list runs is in the plugin
// directory, to fail with a clear error before anything is made.
func (n *Networks) checkPlugins(list *libcni.NetworkConfigList) error {
	dir := []string{n.opts.PluginDir}
	for _, p := range list.Plugins {
		for _, t := range []string{p.Network.Type, p.Network.IPAM.Type} {
			if t == "" {
				continue
			}
			if _, err := invoke.FindInPath(t, dir); err != nil {
				return fmt.Errorf("%w: %s in %s (hack/build-cni.sh builds them)", ErrNoPlugin, t, n.opts.PluginDir)
			}
		}
	}
	return nil
}

// pluginError makes the error a plugin returned readable: libcni's
// *types.Error carries the plugin's message and details.
func pluginError(err error) error {
	var te *types.Error
	if errors.As(err, &te) && te.Details != "" {
		return fmt.Errorf("%w (%s)", err, te.Details)
	}
	return err
}

// resultAddrs returns the sandbox's addresses and gateway from a plugin
// result: those of interfaces in the sandbox, not the bridge's.
func resultAddrs(res types.Result) ([]netip.Prefix, netip.Addr, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("CNI result: %w", err)
	}
	var ips []netip.Prefix
	var gw netip.Addr
	for _, ipc := range r.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(r.Interfaces) || r.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		ones, _ := ipc.Address.Mask.Size()
		ips = append(ips, netip.PrefixFrom(a.Unmap(), ones))
		if g, ok := netip.AddrFromSlice(ipc.Gateway); ok && !gw.IsValid() {
			gw = g.Unmap()
		}
	}
	if len(ips) == 0 {
		return nil, netip.Addr{}, errors.New("the CNI plugins gave the sandbox no address")
	}
	return ips, gw, nil
}

// dns is the sandbox's resolver configuration: the attachment's, the
// network's, or the host's without loopback servers.
func (c *cniNetwork) dns(opts *AttachOptions) (DNSConfig, error) {
	switch {
	case opts.DNS != nil:
		return opts.DNS.clone(), nil
	case c.info != nil && c.info.DNS != nil:
		return c.info.DNS.clone(), nil
	}
	return hostDNS(c.nets.opts.ResolvConf)
}

// commit records an attachment (rec) or forgets one (the record of gone),
// and on a named network rewrites the hosts files of the sandboxes on it.
// It returns rec's peers.
func (n *Networks) commit(ctx context.Context, cniName string, named bool, rec *record, gone string) ([]HostEntry, error) {
	if named {
		// One writer at a time, so that the last hosts files written are
		// those of the last state of the network.
		l, err := lockExclusive(ctx, n.lockPath("hosts-"+cniName))
		if err != nil {
			return nil, err
		}
		defer l.Unlock()
	}
	if rec != nil {
		if err := n.writeRecord(rec, cniName, false); err != nil {
			return nil, err
		}
	} else if err := os.Remove(n.recordPath(cniName, gone)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if !named {
		if rec != nil && rec.HostsFile != "" {
			a := &Attachment{Network: rec.Network, IPs: rec.IPs, Hosts: rec.ExtraHosts}
			if err := writeHostsFile(rec.HostsFile, HostsFile(a, rec.names()...), true); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	recs, err := n.records(cniName)
	if err != nil {
		return nil, err
	}
	var mine []HostEntry
	for _, r := range recs {
		p := peers(recs, r.ID)
		self := rec != nil && r.ID == rec.ID
		if self {
			mine = p
		}
		if r.HostsFile == "" || len(r.IPs) == 0 {
			continue
		}
		a := &Attachment{Network: r.Network, IPs: r.IPs, Hosts: append(slices.Clone(p), r.ExtraHosts...)}
		if err := writeHostsFile(r.HostsFile, HostsFile(a, r.names()...), self); err != nil {
			if self {
				return nil, err
			}
			n.log.Warn("update a sandbox's hosts file", "id", r.ID, "path", r.HostsFile, "err", err)
		}
	}
	return mine, nil
}

// peers returns the hosts entries of the sandboxes in recs but self.
func peers(recs []*record, self string) []HostEntry {
	var out []HostEntry
	for _, r := range recs {
		if r.ID == self || len(r.IPs) == 0 || len(r.names()) == 0 {
			continue
		}
		out = append(out, HostEntry{IP: r.IPs[0].Addr(), Names: r.names()})
	}
	slices.SortFunc(out, func(a, b HostEntry) int { return a.IP.Compare(b.IP) })
	return out
}

// writeHostsFile writes data into the file at path in place, rather than
// replacing it, because a sandbox sees it through a bind mount of that
// very inode. Only the sandbox's own file is created if missing: a peer's
// that is gone belongs to a sandbox that is gone.
func writeHostsFile(path string, data []byte, create bool) error {
	flags := os.O_WRONLY | os.O_TRUNC | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if errors.Is(err, fs.ErrNotExist) && !create {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
