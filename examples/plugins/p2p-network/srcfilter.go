package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The source filter is a tc program on the host end's ingress that lets
// through only what the sandbox may send: ARP and IPv4 from its own
// address, IPv4 to a unicast address and, unless the forward setting is
// on, to the host end's address alone.
//
// Strict rp_filter on the host end would drop forged sources too, but the
// kernel applies the larger of the interface's rp_filter and
// net.ipv4.conf.all.rp_filter, and many distributions set the latter to
// 2 (loose), under which any source the host has a route back to, the
// default route included, passes. Likewise the host end's forwarding is
// off, but a change of net.ipv4.ip_forward (the CNI bridge plugin turns it
// on, for one) sets every interface's forwarding to the new value, after
// which the sandbox would reach whatever the host routes to. The filter
// depends on no host-wide setting, and goes away with the interface.

// Offsets the program reads: __sk_buff.protocol, and the IPv4 source
// address in the frame (tc programs see it from the Ethernet header).
const (
	skbProtocolOff = 16
	ipv4SrcOff     = 14 + 12
	// The ARP sender's protocol address, after the fixed header (8) and
	// the sender's hardware address (6); the kernel drops ARP whose
	// address lengths are not Ethernet's and IPv4's.
	arpSenderOff = 14 + 8 + 6
)

// Values tc programs return in direct-action mode.
const (
	tcActOK   = 0
	tcActShot = 2
)

// sourceFilterInstructions is the program that admits ARP from src and
// IPv4 from src to a unicast address, and drops every other frame (IPv6,
// VLAN-tagged, other sources, multicast and broadcast). If onlyTo is
// valid, IPv4 must be for that address too.
func sourceFilterInstructions(src, onlyTo netip.Addr) asm.Instructions {
	// __sk_buff.protocol holds the EtherType in network order, and a
	// load of an address reads its bytes in the machine's order.
	proto := func(p uint16) int32 { return int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, p))) }
	word := func(a netip.Addr) int64 { a4 := a.As4(); return int64(binary.NativeEndian.Uint32(a4[:])) }
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbProtocolOff, asm.Word),
		asm.JEq.Imm(asm.R2, proto(unix.ETH_P_ARP), "arp"),
		asm.JNE.Imm(asm.R2, proto(unix.ETH_P_IP), "drop"),
		// bpf_skb_load_bytes(skb, ipv4SrcOff, fp-8, 8): source and
		// destination addresses.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipv4SrcOff),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 8),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R2, asm.RFP, -8, asm.Word),
		asm.LoadImm(asm.R3, word(src), asm.DWord),
		asm.JNE.Reg(asm.R2, asm.R3, "drop"),
		// The destination's first octet: 224 and up is multicast, class
		// E and the limited broadcast, none of which a sandbox needs on
		// a point-to-point link, and all of which reach host services
		// listening on every interface (mDNS, SSDP, DHCP...).
		asm.LoadMem(asm.R2, asm.RFP, -4, asm.Byte),
		asm.JGE.Imm(asm.R2, 224, "drop"),
	}
	if onlyTo.IsValid() {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.RFP, -4, asm.Word),
			asm.LoadImm(asm.R3, word(onlyTo), asm.DWord),
			asm.JNE.Reg(asm.R2, asm.R3, "drop"),
		)
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, tcActOK).WithSymbol("pass"),
		asm.Return(),
		// ARP: the sender's protocol address must be src too, or the
		// host would learn a neighbour entry for any address a loose
		// rp_filter lets through, and a sandbox could fill the host's
		// neighbour table (gc_thresh3, host-wide).
		// bpf_skb_load_bytes(skb, arpSenderOff, fp-4, 4)
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("arp"),
		asm.Mov.Imm(asm.R2, arpSenderOff),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -4),
		asm.Mov.Imm(asm.R4, 4),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R2, asm.RFP, -4, asm.Word),
		asm.LoadImm(asm.R3, word(src), asm.DWord),
		asm.JEq.Reg(asm.R2, asm.R3, "pass"),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	)
}

// sourceFilterName names the filter, for `tc filter show dev bp... ingress`.
const sourceFilterName = "berth-p2p-source"

// addSourceFilter installs the source filter on link's ingress, which
// must not be up yet.
func addSourceFilter(link netlink.Link, src, onlyTo netip.Addr) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "p2p_source",
		Type:         ebpf.SchedCLS,
		Instructions: sourceFilterInstructions(src, onlyTo),
		License:      "Apache-2.0",
	})
	if err != nil {
		return fmt.Errorf("load source filter: %w", err)
	}
	// The filter holds the program once attached.
	defer prog.Close()
	idx := link.Attrs().Index
	clsact := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(clsact); err != nil {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: idx,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    1,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         sourceFilterName,
		DirectAction: true,
	}
	if err := netlink.FilterAdd(filter); err != nil {
		return fmt.Errorf("attach source filter: %w", err)
	}
	return nil
}
