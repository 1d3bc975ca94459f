// Package netplug gives each sandbox its network: nothing but loopback
// (None), the host's own (Host), or a port on a Linux bridge with an
// address, published ports and DNS settings (Bridge, named networks from
// a Networks manager, or any CNI configuration with Custom).
//
// A Network is attached to a network namespace that already exists — in
// berth, the one of a sandbox's PID 1, which is started and then waits for
// its spec, so that Attach can run in between — and detached when the
// sandbox ends:
//
//	nets, err := netplug.Open(nil)
//	net, err := nets.Get(ctx, netplug.DefaultNetwork)
//	ns := fmt.Sprintf("/proc/%d/ns/net", pid)
//	a, err := net.Attach(ctx, id, ns, &netplug.AttachOptions{
//		Hostname: "web",
//		Ports:    []netplug.PortMapping{{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80}},
//	})
//	// a.IPs, a.Ports; netplug.HostsFile(a, "web") and a.DNS.ResolvConf()
//	// are the sandbox's /etc/hosts and /etc/resolv.conf.
//	...
//	err = net.Detach(ctx, id, ns)
//
// # CNI
//
// Bridge networks are made by the reference CNI plugins (bridge with
// host-local IPAM, portmap, firewall, and tuning when sysctls are asked
// for), run through libcni. The plugins are looked up in one directory
// only: Options.PluginDir, else $BERTH_CNI_DIR, else DefaultPluginDir
// (/usr/local/lib/berth/cni). Never /opt/cni/bin or /usr/lib/cni, where a
// distribution's plugins of another version may be (Debian's skopeo pulls
// some into /usr/lib/cni). hack/build-cni.sh builds them there at the
// version go.mod pins.
//
// The plugins use iptables (the iptables package: iptables-nft or legacy)
// for masquerading, published ports and forwarding rules. They change
// host settings that netplug never puts back: the bridge plugin turns on
// IPv4 forwarding host-wide (net.ipv4.ip_forward), as every container
// runtime does, and portmap, once a port is published on a bridge, sets
// net.ipv4.conf.<bridge>.route_localnet, so that the host reaches the
// port through 127.0.0.1.
//
// # Filters
//
// berth adds packet filters of its own, in two nftables tables called
// berth (the kernel's nf_tables; `nft list table bridge berth` shows
// them). "ip berth"
// drops IPv4 packets that come in from a berth bridge (any bridge named
// berth*) with a loopback source or destination, before connection
// tracking, so that route_localnet opens the host's loopback to no
// sandbox (Kubernetes' CVE-2020-8558). "bridge berth" gives each sandbox's
// port on a bridge network a chain that drops what the sandbox sends
// with a MAC or IPv4 address not its own, in the frame, the IPv4 header
// or ARP, and anything but IPv4 and ARP: a sandbox, even with
// CAP_NET_RAW, cannot pose as a neighbour or the gateway, to the host or
// to other sandboxes. Attach installs a port's filter and Detach (also
// DetachAll and Prune, after a crash) removes it; Prune removes the
// tables once no port is left. Custom networks get no filters: their
// configuration is the caller's.
//
// Everything a network leaves on the host is named for berth or kept in
// berth's directories, so that it can be audited and removed: bridges are
// called berth0 (the default network) or berth-<name>; IPAM leases, the CNI
// result cache and one record per attachment live under Options.RunDir
// (/run/berth/networks, on tmpfs, as the namespaces they describe do);
// named networks' definitions live under Options.ConfigDir
// (/var/lib/berth/networks). The iptables chains are the plugins' own
// (CNI-*): per-sandbox chains go on Detach, and Networks.Prune removes the
// plugins' shared chains once nothing is left in them, berth's nftables
// tables once no port is filtered, and the bridges no sandbox uses. Because those chains are shared host-wide, so is the lock
// that guards their removal: /run/lock/berth-netplug.lock.
//
// # Crashes
//
// Each attachment is recorded on disk before anything it describes is
// made, and the record names the exact namespace (its inode), so Detach
// works from the record alone after the host program died: when the
// namespace is gone, or its path now names another namespace (a reused
// PID), the plugins are run without one — releasing the address and the
// rules but never touching whatever namespace the path leads to now. That
// is also the usual case, a sandbox detached once it ended: its interface
// went with its namespace. Networks.DetachAll detaches a sandbox from
// whatever its records name, and Networks.Prune every sandbox whose
// namespace is gone.
//
// A program killed in the middle of Attach does not leave its plugins
// at work: they run with a parent-death signal (SIGKILL), and hold, with
// whatever they start in turn, the state lock the Attach held, which
// DetachAll and Prune take exclusively, so that nothing is set up after
// they undid it. What the plugins did before they died is found from the
// ID: a record with no addresses yet is completed from IPAM's leases or
// from the bridge plugin's masquerading rules, whose comments name the
// sandbox, and the sandbox's masquerading chain is named after it. libcni's
// result cache entries go with their attachment, and Prune removes those
// that outlived theirs.
//
// # Names
//
// Sandboxes on the same named network see each other by hostname and
// aliases: Attachment.Hosts lists the others at attach time, and
// AttachOptions.HostsFile names a file netplug keeps current as sandboxes
// come and go. The default network, as Docker's, shares no names.
//
// Networks and the Network values it returns are safe for concurrent use,
// across goroutines and across processes sharing the same directories:
// file locks, not memory, guard what must be serialised, and the slow part
// of an attachment (the plugins) runs in parallel.
package netplug
