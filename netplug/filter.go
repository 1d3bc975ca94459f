package netplug

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// berth's own packet filters, in two nftables tables called "berth":
//
//   - "ip berth" drops, before connection tracking and NAT, IPv4 packets
//     that enter the host from a berth bridge with a loopback source or
//     destination. The portmap plugin sets route_localnet on a bridge to
//     let the host reach published ports through 127.0.0.1; without this
//     rule, any sandbox on that bridge would then reach the host's
//     loopback services with hand-made packets (Kubernetes'
//     CVE-2020-8558). Replies to the host's own connections to a
//     published port on 127.0.0.1 are unaffected: until NAT undoes the
//     masquerading, after this rule, they are addressed to the gateway.
//   - "bridge berth" holds a chain per sandbox's port on a berth bridge,
//     jumped to from the bridge's prerouting hook by the port's name, so
//     that whatever the sandbox sends, to the host or to a neighbour,
//     must carry its own MAC address and its own IPv4 address (in IPv4
//     and in ARP), and be IPv4 or ARP: berth's networks carry nothing
//     else. A sandbox with CAP_NET_RAW can then neither pose as a
//     neighbour to the host or to other sandboxes nor poison their
//     neighbour tables.
//
// The rules are made over netlink with github.com/google/nftables, one
// atomic transaction per attachment and one per detachment. Adding a
// port's filter so costs about half a millisecond; running the nft
// command cost ten times that or more, as it reads the host's whole
// ruleset (iptables-nft's too) first. Removing one costs what the
// kernel makes any nftables deletion wait, an RCU grace period (some
// 10 ms on a busy host), whichever the tool.
const filterTable = "berth"

// portChainPrefix starts the name of each port's chain; portsMap is the
// verdict map from port names to their chains.
const (
	portChainPrefix = "port-"
	portsMap        = "ports"
)

// portRE matches the names of interfaces netplug writes into rules.
var portRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// A portFilter is what a sandbox's port on a bridge lets through.
type portFilter struct {
	Port string           // the host's end of the sandbox's veth
	MAC  net.HardwareAddr // the sandbox's interface's address
	IPs  []netip.Addr     // the sandbox's IPv4 addresses
}

// portFilterOf returns the filter for the sandbox a bridge plugin result
// describes, and the MAC address of the host's end of its veth, which
// tells that end from a later interface of the same name.
func portFilterOf(res types.Result, bridge string, ips []netip.Prefix) (*portFilter, net.HardwareAddr, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, nil, fmt.Errorf("CNI result: %w", err)
	}
	f := &portFilter{}
	var portMAC net.HardwareAddr
	for _, i := range r.Interfaces {
		switch {
		case i.Sandbox != "":
			if f.MAC, err = net.ParseMAC(i.Mac); err != nil {
				return nil, nil, fmt.Errorf("CNI result: sandbox interface %s: %w", i.Name, err)
			}
		case i.Name != bridge && f.Port == "":
			f.Port = i.Name
			portMAC, _ = net.ParseMAC(i.Mac)
		}
	}
	if !portRE.MatchString(f.Port) || len(f.MAC) != 6 {
		return nil, nil, fmt.Errorf("CNI result names no veth with a MAC address (port %q, MAC %q)", f.Port, f.MAC)
	}
	for _, p := range ips {
		if p.Addr().Is4() {
			f.IPs = append(f.IPs, p.Addr())
		}
	}
	if len(f.IPs) == 0 {
		return nil, nil, errors.New("CNI result gives the sandbox no IPv4 address")
	}
	return f, portMAC, nil
}

func portChain(port string) string { return portChainPrefix + port }

// The Ethernet types, and the offsets of the fields the rules match, in
// the Ethernet header and in the IPv4 or ARP header after it.
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806

	etherSrcOffset  = 6
	etherTypeOffset = 12
	ipv4SrcOffset   = 12
	ipv4DstOffset   = 16
	arpSHAOffset    = 8 // sender hardware address, for Ethernet and IPv4
	arpSPAOffset    = 14
)

// berthTables are berth's two tables, and base chains and map, as the
// kernel is to have them.
type berthTables struct {
	ip, bridge *nftables.Table
	loopback   *nftables.Chain // ip berth prerouting
	bridgeIn   *nftables.Chain // bridge berth prerouting
	ports      *nftables.Set
}

func tablesOf() *berthTables {
	t := &berthTables{
		ip:     &nftables.Table{Family: nftables.TableFamilyIPv4, Name: filterTable},
		bridge: &nftables.Table{Family: nftables.TableFamilyBridge, Name: filterTable},
	}
	accept := nftables.ChainPolicyAccept
	t.loopback = &nftables.Chain{
		Name: "prerouting", Table: t.ip, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept,
	}
	t.bridgeIn = &nftables.Chain{
		Name: "prerouting", Table: t.bridge, Type: nftables.ChainTypeFilter,
		// The bridge family's filter priority.
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200), Policy: &accept,
	}
	t.ports = &nftables.Set{
		Table: t.bridge, Name: portsMap, IsMap: true,
		KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict,
	}
	return t
}

// add queues the making of the tables, chains and map, and of the base
// chains' rules, on c.
func (t *berthTables) add(c *nftables.Conn) error {
	c.AddTable(t.ip)
	c.AddChain(t.loopback)
	// iifname "berth*" ip daddr (then saddr) 127.0.0.0/8 drop
	for _, off := range []uint32{ipv4DstOffset, ipv4SrcOffset} {
		c.AddRule(&nftables.Rule{Table: t.ip, Chain: t.loopback, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("berth")}, // a prefix: berth*
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	c.AddTable(t.bridge)
	if err := c.AddSet(t.ports, nil); err != nil {
		return err
	}
	c.AddChain(t.bridgeIn)
	// iifname vmap @ports
	c.AddRule(&nftables.Rule{Table: t.bridge, Chain: t.bridgeIn, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: t.ports.Name, SetID: t.ports.ID, DestRegister: 0, IsDestRegSet: true},
	}})
	return nil
}

// ifKey is an interface name as the kernel keeps it: IFNAMSIZ bytes,
// padded with zeros.
func ifKey(name string) []byte {
	k := make([]byte, unix.IFNAMSIZ)
	copy(k, name)
	return k
}

// rules returns the rules of f's chain: each drops what does not match.
func (f *portFilter) rules() [][]expr.Any {
	load := func(base expr.PayloadBase, off, n uint32) *expr.Payload {
		return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
	}
	isType := func(etype uint16) []expr.Any {
		return []expr.Any{
			load(expr.PayloadBaseLLHeader, etherTypeOffset, 2),
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, etype)},
		}
	}
	// notIn compares register 1 with each of vals: all unequal, no match.
	notIn := func(vals ...[]byte) []expr.Any {
		var e []expr.Any
		for _, v := range vals {
			e = append(e, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: v})
		}
		return e
	}
	var ips [][]byte
	for _, a := range f.IPs {
		b := a.As4()
		ips = append(ips, b[:])
	}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	mac := []byte(f.MAC)
	return [][]expr.Any{
		// ether saddr != MAC drop
		append(append([]expr.Any{load(expr.PayloadBaseLLHeader, etherSrcOffset, 6)}, notIn(mac)...), drop),
		// ether type != { ip, arp } drop
		append(append([]expr.Any{load(expr.PayloadBaseLLHeader, etherTypeOffset, 2)},
			notIn(binary.BigEndian.AppendUint16(nil, etherTypeIPv4), binary.BigEndian.AppendUint16(nil, etherTypeARP))...), drop),
		// ether type arp arp saddr ether != MAC drop
		append(append(append(isType(etherTypeARP), load(expr.PayloadBaseNetworkHeader, arpSHAOffset, 6)), notIn(mac)...), drop),
		// ether type arp arp saddr ip != IPs drop
		append(append(append(isType(etherTypeARP), load(expr.PayloadBaseNetworkHeader, arpSPAOffset, 4)), notIn(ips...)...), drop),
		// ether type ip ip saddr != IPs drop
		append(append(append(isType(etherTypeIPv4), load(expr.PayloadBaseNetworkHeader, ipv4SrcOffset, 4)), notIn(ips...)...), drop),
	}
}

// filterSetupLock is held exclusively by an attachment that makes
// berth's tables, so that two making them at once do not both add the
// base chains' rules. The tables are made in one transaction, so once
// they exist they are whole, and attachments only add their ports. The
// caller holds sharedChainsLock, shared, so Prune cannot remove the
// tables meanwhile.
const filterSetupLock = "/run/lock/berth-netplug-filter.lock"

// ensureTables makes berth's tables, base chains and map unless they
// exist. Checking costs two lookups; rewriting them every time would
// cost a kernel grace period, which replacing rules waits for.
func ensureTables(ctx context.Context, c *nftables.Conn, t *berthTables) error {
	exist := func() bool {
		for _, table := range []*nftables.Table{t.ip, t.bridge} {
			if _, err := c.ListTableOfFamily(table.Name, table.Family); err != nil {
				return false
			}
		}
		return true
	}
	if exist() {
		return nil
	}
	l, err := lockExclusive(ctx, filterSetupLock)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if exist() {
		return nil
	}
	if err := t.add(c); err != nil {
		return err
	}
	return c.Flush()
}

// installPortFilter installs f, and berth's shared tables if need be.
func installPortFilter(ctx context.Context, f *portFilter) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("filter port %s: %w", f.Port, err)
	}
	t := tablesOf()
	if err := ensureTables(ctx, c, t); err != nil {
		return fmt.Errorf("filter port %s: berth's nftables tables: %w", f.Port, err)
	}
	// One transaction: the port's chain, its rules and its element.
	chain := c.AddChain(&nftables.Chain{Name: portChain(f.Port), Table: t.bridge})
	for _, r := range f.rules() {
		c.AddRule(&nftables.Rule{Table: t.bridge, Chain: chain, Exprs: r})
	}
	if err := c.SetAddElements(t.ports, []nftables.SetElement{{
		Key: ifKey(f.Port), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain.Name},
	}}); err != nil {
		return fmt.Errorf("filter port %s: %w", f.Port, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("filter port %s: nftables: %w", f.Port, err)
	}
	return nil
}

// removePortFilter removes the filter of port, if it has one. portMAC is
// the address the port had: if an interface of that name exists with
// another address, it is a later sandbox's port, whose filter it is now,
// and it is left alone.
func removePortFilter(port string, portMAC net.HardwareAddr) error {
	if !portRE.MatchString(port) {
		return fmt.Errorf("%w: port name %q", ErrInvalid, port)
	}
	if l, err := netlink.LinkByName(port); err == nil && len(portMAC) > 0 && !bytes.Equal(l.Attrs().HardwareAddr, portMAC) {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("remove the filter of port %s: %w", port, err)
	}
	if err := deletePorts(c, tablesOf(), port); err != nil {
		if errors.Is(err, unix.ENOENT) {
			// Gone already, or never made: a failed attachment, a
			// second detach. The map's element and the chain come and
			// go together.
			return nil
		}
		return fmt.Errorf("remove the filter of port %s: nftables: %w", port, err)
	}
	return nil
}

// deletePorts removes the filters of ports in one transaction. With no
// ports (a Prune that finds every port alive) it sends nothing: no
// needless transaction, and no DELSETELEM near the form the kernel takes
// for "flush the map", which would unfilter every sandbox.
func deletePorts(c *nftables.Conn, t *berthTables, ports ...string) error {
	if len(ports) == 0 {
		return nil
	}
	elems := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		elems[i] = nftables.SetElement{Key: ifKey(p)}
	}
	if err := c.SetDeleteElements(t.ports, elems); err != nil {
		return err
	}
	for _, p := range ports {
		chain := &nftables.Chain{Name: portChain(p), Table: t.bridge}
		c.FlushChain(chain)
		c.DelChain(chain)
	}
	return c.Flush()
}

// pruneFilters removes the filters of ports that no longer exist (a
// sandbox whose detachment did not run to its end, of any state
// directory), and berth's tables once no port is left in them. The
// caller holds sharedChainsLock exclusively, so no attachment is adding
// a port meanwhile.
func pruneFilters() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := tablesOf()
	ports, err := filteredPorts(c, t)
	if err != nil {
		return fmt.Errorf("prune berth's nftables filters: %w", err)
	}
	var gone []string
	for _, p := range ports {
		if _, err := netlink.LinkByName(p); err != nil {
			gone = append(gone, p)
		}
	}
	if len(gone) == len(ports) {
		for _, table := range []*nftables.Table{t.ip, t.bridge} {
			if _, err := c.ListTableOfFamily(table.Name, table.Family); err == nil {
				c.DelTable(table)
			}
		}
		err = c.Flush()
	} else {
		err = deletePorts(c, t, gone...)
	}
	if err != nil {
		return fmt.Errorf("prune berth's nftables filters: %w", err)
	}
	return nil
}

// filteredPorts returns the ports that have a chain in the bridge table
// or an element in its map.
func filteredPorts(c *nftables.Conn, t *berthTables) ([]string, error) {
	if _, err := c.ListTableOfFamily(t.bridge.Name, t.bridge.Family); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	var ports []string
	chains, err := c.ListChainsOfTableFamily(t.bridge.Family)
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if ch.Table.Name != t.bridge.Name {
			continue
		}
		if p, ok := strings.CutPrefix(ch.Name, portChainPrefix); ok {
			ports = append(ports, p)
		}
	}
	set, err := c.GetSetByName(t.bridge, portsMap)
	if err == nil {
		var elems []nftables.SetElement
		if elems, err = c.GetSetElements(set); err == nil {
			for _, e := range elems {
				ports = append(ports, string(bytes.TrimRight(e.Key, "\x00")))
			}
		}
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}
