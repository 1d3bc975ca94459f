package sandbox

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/berth-dev/berth/netplug"
)

func (s *Sandbox) hostNetwork() bool {
	return s.opts.Network != nil && netplug.IsHost(s.opts.Network)
}

// attachNetwork connects PID 1's network namespace, rewriting the hosts
// and resolv.conf files the init will bind over the image's.
func (s *Sandbox) attachNetwork(ctx context.Context, pid int, stateDir, hostname string) error {
	n := s.opts.Network
	if n == nil {
		return nil
	}
	netns := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	a, err := n.Attach(ctx, s.id, netns, &netplug.AttachOptions{
		Hostname:   hostname,
		Aliases:    s.opts.NetworkAliases,
		Ports:      s.opts.Ports,
		DNS:        s.opts.DNS,
		HostsFile:  etcFile(stateDir, "hosts"),
		ExtraHosts: s.opts.ExtraHosts,
	})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	// Detach runs after PID 1 is gone, when only the record is left of
	// the namespace; netplug undoes the attachment from that.
	s.undo = append(s.undo, func() error { return n.Detach(context.Background(), s.id, netns) })
	s.attachment = a
	if err := os.WriteFile(etcFile(stateDir, "resolv.conf"), []byte(a.DNS.ResolvConf()), 0o644); err != nil {
		return err
	}
	if netplug.IsHost(n) {
		// The host's network, and so its names for itself.
		b := netplug.HostsFile(&netplug.Attachment{Network: a.Network, IPs: a.IPs, Hosts: s.opts.ExtraHosts}, hostname)
		return os.WriteFile(etcFile(stateDir, "hosts"), b, 0o644)
	}
	return nil
}

// Attachment returns what the sandbox's network gave it: addresses,
// published ports with the host ports chosen, DNS. It is nil before Start
// and for a sandbox without a network.
func (s *Sandbox) Attachment() *netplug.Attachment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attachment
}

// NetworkNamespace returns the path of the running sandbox's network
// namespace, for another sandbox's Options.JoinNetwork.
func (s *Sandbox) NetworkNamespace() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return ""
	}
	return "/proc/" + strconv.Itoa(s.proc.Pid) + "/ns/net"
}
