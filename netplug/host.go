package netplug

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/utils"
	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
)

// deleteBridge deletes a network's bridge, if it exists and nothing is
// plugged into it: bridge names are host-wide, and another RunDir's
// sandboxes may use the same one. Only bridges with names netplug gives
// are deleted.
func deleteBridge(name string) error {
	if !bridgeRE.MatchString(name) {
		return fmt.Errorf("refusing to delete %q: not a bridge name netplug gives", name)
	}
	br, err := netlink.LinkByName(name)
	if _, ok := errors.AsType[netlink.LinkNotFoundError](err); ok {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", name, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("refusing to delete %s: a %s, not a bridge", name, br.Type())
	}
	links, err := linkList()
	if err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			return fmt.Errorf("bridge %s: %w: %s is plugged into it", name, ErrInUse, l.Attrs().Name)
		}
	}
	if err := netlink.LinkDel(br); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// linkList lists the host's interfaces, again if a change interrupted the
// listing.
func linkList() ([]netlink.Link, error) {
	for i := 0; ; i++ {
		links, err := netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 5 {
			return links, err
		}
	}
}

// hostRoutes returns the host's IPv4 routes but the default one: the
// subnets a new network must not overlap.
func hostRoutes() []netip.Prefix {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
			out = append(out, p)
		}
	}
	return out
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

// teardownMasquerade removes the bridge plugin's masquerading of the
// sandbox's addresses, when the plugin could not (see detach): the rules
// in POSTROUTING and the sandbox's chain, named as the plugin names them.
// nsGone says that the sandbox's namespace was gone at DEL, so that the
// plugin surely left them. Without ips (an Attach killed before the
// plugin's result reached its record, while the plugin went on) the
// rules are found by the chain they jump to and the plugin's comment,
// both of which name the network and the ID.
func (n *Networks) teardownMasquerade(ctx context.Context, network, id string, ips []netip.Prefix, nsGone bool) error {
	chain := utils.FormatChainName(network, id)
	comment := utils.FormatComment(network, id)
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		var mine []netip.Prefix
		for _, p := range ips {
			if p.Addr().Is4() == (proto == iptables.ProtocolIPv4) {
				mine = append(mine, p)
			}
		}
		if len(ips) > 0 && len(mine) == 0 {
			continue
		}
		if nsGone && len(mine) > 0 {
			// Each iptables run costs milliseconds; removing the rules
			// one checked step at a time took some ten runs.
			err := removeMasqueradeAtOnce(ctx, proto, chain, comment, mine)
			if err == nil {
				continue
			}
			n.log.Debug("remove masquerading at once; going step by step", "id", id, "err", err)
		}
		ipt, err := n.iptablesFor(proto)
		if err != nil {
			if len(ips) == 0 && proto == iptables.ProtocolIPv6 {
				continue // a host without ip6tables has no IPv6 rules to leave
			}
			return err
		}
		// One listing in the common case, where the plugin did it all.
		if ok, err := ipt.ChainExists("nat", chain); err != nil || !ok {
			if err != nil {
				return fmt.Errorf("masquerading of %s: %w", id, err)
			}
			continue
		}
		// The rules as listed, whatever form each source was written in
		// (older plugins gave it with its prefix length).
		rules, _ := chainRules(ipt, "nat", "POSTROUTING")
		for _, r := range rules {
			if jumpTarget(r) != chain || !slices.Contains(r, comment) {
				continue
			}
			if err := ipt.DeleteIfExists("nat", "POSTROUTING", r...); err != nil {
				return fmt.Errorf("masquerading of %s: %w", id, err)
			}
		}
		if err := ipt.ClearAndDeleteChain("nat", chain); err != nil {
			return fmt.Errorf("masquerading of %s: %w", id, err)
		}
	}
	return nil
}

// iptablesFor returns the iptables of proto: IPv4's is made once.
func (n *Networks) iptablesFor(proto iptables.Protocol) (*iptables.IPTables, error) {
	if proto == iptables.ProtocolIPv4 {
		return n.iptables()
	}
	return iptables.NewWithProtocol(proto)
}

// masqueradedAddrs returns the source addresses of the bridge plugin's
// POSTROUTING rules for sandbox id on network, found by their comment:
// the sandbox's addresses when neither its record nor IPAM has them (a
// detach cut short after DEL released the lease).
func (n *Networks) masqueradedAddrs(network, id string) []netip.Prefix {
	comment := utils.FormatComment(network, id)
	var out []netip.Prefix
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := n.iptablesFor(proto)
		if err != nil {
			continue
		}
		rules, _ := chainRules(ipt, "nat", "POSTROUTING")
		for _, r := range rules {
			if !slices.Contains(r, comment) {
				continue
			}
			for i := 0; i+1 < len(r); i++ {
				if r[i] != "-s" {
					continue
				}
				if p, err := netip.ParsePrefix(r[i+1]); err == nil {
					out = append(out, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
				} else if a, err := netip.ParseAddr(r[i+1]); err == nil {
					out = append(out, netip.PrefixFrom(a, a.BitLen()))
				}
			}
		}
	}
	return out
}

// removeMasqueradeAtOnce removes the POSTROUTING rule of each of srcs and
// the sandbox's chain in one iptables-restore transaction. A transaction
// is all or nothing: if any of them is missing, or a rule was written in
// another form (older plugins gave the source with its prefix length),
// nothing changes and it fails.
func removeMasqueradeAtOnce(ctx context.Context, proto iptables.Protocol, chain, comment string, srcs []netip.Prefix) error {
	var b strings.Builder
	b.WriteString("*nat\n")
	quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(comment) + `"`
	for _, p := range srcs {
		fmt.Fprintf(&b, "-D POSTROUTING -s %s -j %s -m comment --comment %s\n", p.Addr(), chain, quoted)
	}
	fmt.Fprintf(&b, "-F %s\n-X %s\nCOMMIT\n", chain, chain)
	bin := "iptables-restore"
	if proto == iptables.ProtocolIPv6 {
		bin = "ip6tables-restore"
	}
	cmd := exec.CommandContext(ctx, bin, "--noflush")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", bin, err, bytes.TrimSpace(out))
	}
	return nil
}

// The chains the portmap and firewall plugins share between all the
// sandboxes on a host, and leave when the last one goes.
const (
	hostportDNAT    = "CNI-HOSTPORT-DNAT"
	hostportSetMark = "CNI-HOSTPORT-SETMARK"
	hostportMasq    = "CNI-HOSTPORT-MASQ"
	firewallForward = "CNI-FORWARD"
	firewallAdmin   = "CNI-ADMIN"
)

// pruneSharedChains removes the plugins' shared chains when no rule of any
// sandbox, berth's or another CNI runtime's, is left in them, and the
// rules that jump to them. The caller holds sharedChainsLock exclusively.
func pruneSharedChains(log *slog.Logger) error {
	var errs []error
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			if proto == iptables.ProtocolIPv4 {
				errs = append(errs, err)
			}
			continue
		}
		// portmap: the DNAT chain holds a jump per sandbox with ports; the
		// mark and masquerade chains are only used through those.
		if rules, ok := chainRules(ipt, "nat", hostportDNAT); ok && len(rules) == 0 {
			errs = append(errs,
				removeChain(ipt, "nat", hostportDNAT, "PREROUTING", "OUTPUT"),
				removeChain(ipt, "nat", hostportMasq, "POSTROUTING"),
				removeChain(ipt, "nat", hostportSetMark))
		}
		// firewall: the forward chain holds rules per sandbox, and a jump
		// to the admin chain, which is the administrator's to fill.
		if rules, ok := chainRules(ipt, "filter", firewallForward); ok &&
			!slices.ContainsFunc(rules, func(r []string) bool { return jumpTarget(r) != firewallAdmin }) {
			if admin, ok := chainRules(ipt, "filter", firewallAdmin); !ok || len(admin) == 0 {
				errs = append(errs,
					removeChain(ipt, "filter", firewallForward, "FORWARD"),
					removeChain(ipt, "filter", firewallAdmin))
			}
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		log.Warn("prune CNI's shared iptables chains", "err", err)
	}
	return err
}

// chainRules returns the rules of a chain, each split into arguments
// without the leading "-A CHAIN", and whether the chain exists.
func chainRules(ipt *iptables.IPTables, table, chain string) ([][]string, bool) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		return nil, false // no such chain
	}
	var rules [][]string
	for _, l := range lines {
		if f := splitRule(l); len(f) > 2 && f[0] == "-A" {
			rules = append(rules, f[2:])
		}
	}
	return rules, true
}

// removeChain deletes the rules of the entry chains that jump to chain,
// then chain.
func removeChain(ipt *iptables.IPTables, table, chain string, entries ...string) error {
	for _, e := range entries {
		rules, _ := chainRules(ipt, table, e)
		for _, r := range rules {
			if jumpTarget(r) == chain {
				if err := ipt.DeleteIfExists(table, e, r...); err != nil {
					return err
				}
			}
		}
	}
	return ipt.ClearAndDeleteChain(table, chain)
}

func jumpTarget(rule []string) string {
	for i := 0; i+1 < len(rule); i++ {
		if rule[i] == "-j" || rule[i] == "-g" {
			return rule[i+1]
		}
	}
	return ""
}

// splitRule splits a rule as iptables -S prints it into arguments: words,
// and double-quoted strings in which a backslash escapes.
func splitRule(s string) []string {
	var out []string
	var cur strings.Builder
	in, quoted, escaped := false, false, false
	for _, c := range s {
		switch {
		case escaped:
			cur.WriteRune(c)
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted, in = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// chainSetupLock is held exclusively by an attachment whose plugins are
// to create the shared chains. The firewall and portmap plugins check for
// a chain or an entry rule and then add it, so two of them setting up at
// once either fail (iptables-nft answers a chain that appeared meanwhile
// with an exit status the plugins do not take for "exists") or add the
// entry rules twice. Once the chains are there, attachments run at once
// again. The shared chains lock is held around it, so Prune cannot remove
// the chains between the check and the plugins' run.
const chainSetupLock = "/run/lock/berth-netplug-setup.lock"

// A chainProbe is the rule a plugin adds last when it sets up its shared
// chains: while it is missing, the setup is not done.
type chainProbe struct {
	table, chain string
	rule         []string
}

// The rules are the plugins' own, argument for argument: iptables -C
// matches them exactly.
var (
	firewallProbe = chainProbe{"filter", firewallForward,
		[]string{"-m", "comment", "--comment", "CNI firewall plugin admin overrides", "-j", firewallAdmin}}
	portmapProbe = chainProbe{"nat", "OUTPUT",
		[]string{"-m", "addrtype", "--dst-type", "LOCAL", "-j", hostportDNAT}}
)

// sharedChainProbes returns the probes for the shared chains the list's
// plugins set up in an ADD: the firewall plugin's always, portmap's when
// ports are published. Plugins on another backend than iptables share
// nothing berth knows of. Only IPv4 is probed: berth's networks are IPv4,
// and an IPv6-only custom network merely attaches one at a time.
func sharedChainProbes(list *libcni.NetworkConfigList, ports bool) []chainProbe {
	var probes []chainProbe
	for _, p := range list.Plugins {
		var conf struct {
			Backend string `json:"backend"`
		}
		if json.Unmarshal(p.Bytes, &conf) != nil || (conf.Backend != "" && conf.Backend != "iptables") {
			continue
		}
		switch {
		case p.Network.Type == "firewall":
			probes = append(probes, firewallProbe)
		case p.Network.Type == "portmap" && ports:
			probes = append(probes, portmapProbe)
		}
	}
	return probes
}

// awaitSharedChains returns at once if the shared chains the list's
// plugins use are set up. Otherwise it takes chainSetupLock, for the
// caller to hold while its plugins run, unless the chains were set up
// while it waited. The caller holds the shared chains lock.
func (n *Networks) awaitSharedChains(ctx context.Context, list *libcni.NetworkConfigList, ports bool) (unlock func(), err error) {
	probes := sharedChainProbes(list, ports)
	if n.chainsReady(probes) {
		return func() {}, nil
	}
	l, err := lockExclusive(ctx, chainSetupLock)
	if err != nil {
		return nil, err
	}
	if n.chainsReady(probes) {
		l.Unlock()
		return func() {}, nil
	}
	return l.Unlock, nil
}

// chainsReady reports whether every probe's rule exists. Any doubt (no
// iptables, an error) counts as not ready: the price is only waiting.
func (n *Networks) chainsReady(probes []chainProbe) bool {
	if len(probes) == 0 {
		return true
	}
	ipt, err := n.iptables()
	if err != nil {
		return false
	}
	for _, p := range probes {
		if ok, err := ipt.Exists(p.table, p.chain, p.rule...); err != nil || !ok {
			return false
		}
	}
	return true
}
