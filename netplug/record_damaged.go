package netplug

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/utils"
	"github.com/coreos/go-iptables/iptables"
)

// detachDamaged undoes the attachment of sandbox id to the CNI network
// cniName when its record cannot be read, with what can be found without
// it: the network's definition gives the plugins' configuration, the IPAM
// leases (named after the addresses, holding the sandbox's ID) its
// addresses, and the plugins and libcni's cache find the rest by the ID.
// The namespace is not entered: without the record nothing says which it
// was. Its veth goes with it, and Prune removes a veth's packet filter
// once the veth is gone.
func (n *Networks) detachDamaged(ctx context.Context, cniName, id string, cause error) error {
	infos, err := n.infos()
	if err != nil {
		return err
	}
	var c *cniNetwork
	for _, info := range infos {
		if info.cniName() == cniName {
			c = n.network(info)
		}
	}
	if c == nil {
		return fmt.Errorf("detach %s: %w; and no network %s to undo it with", id, cause, cniName)
	}
	// With the port mapper, whose DEL finds its rules by the ID.
	list, err := c.confList(true)
	if err != nil {
		return fmt.Errorf("detach %s: %w", id, err)
	}
	ips := n.leasedAddrs(cniName, id)
	rt := &libcni.RuntimeConf{ContainerID: id, IfName: ifName}
	// libcni's cache of a complete attachment has the configuration and
	// the port mappings it was made with.
	if conf, cached, err := n.cni.GetNetworkListCachedConfig(list, rt); err == nil && cached != nil {
		if l, err := libcni.ConfListFromBytes(conf); err == nil {
			list, rt = l, cached
		}
	}
	if err := n.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("detach %s from network %s (record unreadable): %w", id, c.name(), pluginError(err))
	}
	if masqueradeBackend(list) == "iptables" {
		if err := n.teardownMasquerade(ctx, list.Name, id, ips, true); err != nil {
			return fmt.Errorf("detach %s from network %s (record unreadable): %w", id, c.name(), err)
		}
	}
	// What the plugins could not find without the port mappings (an
	// attachment cut short has no cache): rules that CNI's plugins
	// mark with the sandbox's ID, and the chains they jump to.
	if err := removeRulesNaming(list.Name, id); err != nil {
		return fmt.Errorf("detach %s from network %s (record unreadable): %w", id, c.name(), err)
	}
	if _, err := n.commit(ctx, cniName, c.named(), nil, id); err != nil {
		return fmt.Errorf("detach %s from network %s (record unreadable): %w", id, c.name(), err)
	}
	n.log.Warn("detached a sandbox whose attachment record was unreadable", "id", id, "network", c.name(), "err", cause, "ips", ips)
	return nil
}

// leasedAddrs returns the addresses that host-local IPAM leased to
// sandbox id on the CNI network cniName.
func (n *Networks) leasedAddrs(cniName, id string) []netip.Prefix {
	paths, _ := filepath.Glob(filepath.Join(n.opts.RunDir, "ipam", cniName, "*"))
	var out []netip.Prefix
	for _, p := range paths {
		addr, err := netip.ParseAddr(filepath.Base(p))
		if err != nil {
			continue // last_reserved_ip, the lock
		}
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		if sc.Scan() && strings.TrimSpace(sc.Text()) == id {
			out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
		}
		f.Close()
	}
	return out
}

// removeRulesNaming removes the iptables rules in the nat and filter
// tables whose comment is one that CNI's plugins give the rules of
// sandbox id on network (IPv4 and IPv6), and the chains of the sandbox's
// own that they jump to.
func removeRulesNaming(network, id string) error {
	// The bridge plugin's comments are this; the port mapper's begin
	// with "dnat ".
	comment := utils.FormatComment(network, id)
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			if proto == iptables.ProtocolIPv6 {
				continue // a host without ip6tables has no IPv6 rules to leave
			}
			return err
		}
		for _, table := range []string{"nat", "filter"} {
			chains, err := ipt.ListChains(table)
			if err != nil {
				return err
			}
			for _, chain := range chains {
				rules, _ := chainRules(ipt, table, chain)
				for _, r := range rules {
					if !slices.ContainsFunc(r, func(arg string) bool { return strings.HasSuffix(arg, comment) }) {
						continue
					}
					if err := ipt.DeleteIfExists(table, chain, r...); err != nil {
						return err
					}
					// A chain made for this sandbox alone (CNI-DN-...)
					// goes with the rule that led to it.
					if target := jumpTarget(r); strings.HasPrefix(target, "CNI-DN-") {
						if err := ipt.ClearAndDeleteChain(table, target); err != nil {
							return err
						}
					}
				}
			}
		}
	}
	return nil
}
