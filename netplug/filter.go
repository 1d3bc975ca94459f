package netplug

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
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
// The rules are written with the nft command, one atomic transaction per
// attachment and per detachment: readable rules, the same tool an
// administrator inspects them with, and no library to keep in step with
// the kernel's netlink encoding; it costs a few milliseconds an
// attachment.
const filterTable = "berth"

// nftCommand is the nftables command line tool; the nftables package
// has it.
const nftCommand = "nft"

// portChainPrefix starts the name of each port's chain.
const portChainPrefix = "port-"

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

// sharedFilters are the commands that make berth's tables and base
// chains, and rewrite the base chains' rules, so that every attachment
// leaves them whole; in a transaction, rewriting them changes nothing
// for packets.
const sharedFilters = `add table ip berth
add chain ip berth prerouting { type filter hook prerouting priority raw; policy accept; }
flush chain ip berth prerouting
add rule ip berth prerouting iifname "berth*" ip daddr 127.0.0.0/8 drop
add rule ip berth prerouting iifname "berth*" ip saddr 127.0.0.0/8 drop
add table bridge berth
add map bridge berth ports { type ifname : verdict; }
add chain bridge berth prerouting { type filter hook prerouting priority filter; policy accept; }
flush chain bridge berth prerouting
add rule bridge berth prerouting iifname vmap @ports
`

// script returns the nft commands that install f, with the shared tables.
func (f *portFilter) script() string {
	var b strings.Builder
	b.WriteString(sharedFilters)
	chain := portChain(f.Port)
	ips := make([]string, len(f.IPs))
	for i, a := range f.IPs {
		ips[i] = a.String()
	}
	set := "{ " + strings.Join(ips, ", ") + " }"
	rule := func(format string, args ...any) {
		fmt.Fprintf(&b, "add rule bridge berth %s "+format+"\n", append([]any{chain}, args...)...)
	}
	fmt.Fprintf(&b, "add chain bridge berth %s\nflush chain bridge berth %s\n", chain, chain)
	rule("ether saddr != %s drop", f.MAC)
	rule("ether type != { ip, arp } drop")
	rule("ether type arp arp saddr ether != %s drop", f.MAC)
	rule("ether type arp arp saddr ip != %s drop", set)
	rule("ether type ip ip saddr != %s drop", set)
	fmt.Fprintf(&b, "add element bridge berth ports { %q : jump %s }\n", f.Port, chain)
	return b.String()
}

// installPortFilter installs f, and berth's shared filters if need be.
func installPortFilter(ctx context.Context, f *portFilter) error {
	if err := nft(ctx, f.script()); err != nil {
		return fmt.Errorf("filter port %s: %w", f.Port, err)
	}
	return nil
}

// removePortFilter removes the filter of port, if it has one. portMAC is
// the address the port had: if an interface of that name exists with
// another address, it is a later sandbox's port, whose filter it is now,
// and it is left alone.
func removePortFilter(ctx context.Context, port string, portMAC net.HardwareAddr) error {
	if !portRE.MatchString(port) {
		return fmt.Errorf("%w: port name %q", ErrInvalid, port)
	}
	if _, err := exec.LookPath(nftCommand); err != nil {
		return nil // nothing can have been made without it
	}
	if l, err := netlink.LinkByName(port); err == nil && len(portMAC) > 0 && !bytes.Equal(l.Attrs().HardwareAddr, portMAC) {
		return nil
	}
	chain := portChain(port)
	err := nft(ctx, fmt.Sprintf("delete element bridge berth ports { %q }\ndelete chain bridge berth %s\n", port, chain))
	if err == nil || !errors.Is(err, errNftNotFound) {
		if err != nil {
			return fmt.Errorf("remove the filter of port %s: %w", port, err)
		}
		return nil
	}
	// Gone already, or never made: a failed attachment, a second detach.
	// The map's element and the chain come and go together.
	if err := nft(ctx, "list chain bridge berth "+chain+"\n"); errors.Is(err, errNftNotFound) {
		return nil
	}
	return fmt.Errorf("remove the filter of port %s: %w", port, err)
}

// pruneFilters removes the filters of ports that no longer exist (a
// sandbox whose detachment did not run to its end, of any state
// directory), and berth's tables once no port is left in them. The
// caller holds sharedChainsLock exclusively, so no attachment is adding
// a port meanwhile.
func pruneFilters(ctx context.Context) error {
	if _, err := exec.LookPath(nftCommand); err != nil {
		return nil // nothing can have been made without it
	}
	ports, err := filteredPorts(ctx)
	if err != nil {
		return err
	}
	var script strings.Builder
	left := 0
	for _, p := range ports {
		if _, err := netlink.LinkByName(p); err == nil {
			left++
			continue
		}
		fmt.Fprintf(&script, "delete element bridge berth ports { %q }\ndelete chain bridge berth %s\n", p, portChain(p))
	}
	if left == 0 {
		script.Reset()
		for _, family := range []string{"ip", "bridge"} {
			if err := nft(ctx, "list table "+family+" berth\n"); err == nil {
				fmt.Fprintf(&script, "delete table %s berth\n", family)
			}
		}
	}
	if script.Len() == 0 {
		return nil
	}
	if err := nft(ctx, script.String()); err != nil {
		return fmt.Errorf("prune berth's nftables filters: %w", err)
	}
	return nil
}

// filteredPorts returns the ports that have a chain in the bridge table
// or an element in its map.
func filteredPorts(ctx context.Context) ([]string, error) {
	out, err := nftOutput(ctx, "-j", "list", "table", "bridge", filterTable)
	if errors.Is(err, errNftNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list struct {
		Nftables []struct {
			Chain *struct {
				Name string `json:"name"`
			} `json:"chain"`
			Map *struct {
				Name string            `json:"name"`
				Elem []json.RawMessage `json:"elem"`
			} `json:"map"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("nft's listing of berth's bridge table: %w", err)
	}
	var ports []string
	for _, o := range list.Nftables {
		if o.Chain != nil {
			if p, ok := strings.CutPrefix(o.Chain.Name, portChainPrefix); ok {
				ports = append(ports, p)
			}
		}
		if o.Map != nil && o.Map.Name == "ports" {
			for _, e := range o.Map.Elem {
				// Each element is [key, verdict].
				var kv []json.RawMessage
				var key string
				if json.Unmarshal(e, &kv) == nil && len(kv) == 2 && json.Unmarshal(kv[0], &key) == nil {
					ports = append(ports, key)
				}
			}
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

// errNftNotFound is what nft reports when a table, chain or element to
// delete or list does not exist.
var errNftNotFound = errors.New("no such nftables object")

// nft runs a script of nft commands as one transaction.
func nft(ctx context.Context, script string) error {
	_, err := runNft(ctx, script, "-f", "-")
	return err
}

// nftOutput runs nft with args and returns what it printed.
func nftOutput(ctx context.Context, args ...string) ([]byte, error) {
	return runNft(ctx, "", args...)
}

func runNft(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, nftCommand, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("%w: berth's bridge networks need nftables (hack/deps.sh installs it)", err)
		}
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "No such file or directory") {
			return nil, fmt.Errorf("%w: %s", errNftNotFound, firstLine(msg))
		}
		return nil, fmt.Errorf("nft: %w: %s", err, msg)
	}
	return stdout.Bytes(), nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
