// Command p2p-network is a berth network plugin that connects each
// sandbox by a point-to-point veth pair of its own, with no bridge, no
// iptables and no CNI. See README.md.
package main

import (
	"os"

	"github.com/cilium/ebpf/rlimit"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	log := plugin.Logger()
	// Kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK, whose
	// default is too low for the source filter; later ones do nothing here.
	if err := rlimit.RemoveMemlock(); err != nil {
		log.Warn("raise RLIMIT_MEMLOCK for the source filter", "err", err)
	}
	dir := os.Getenv("BERTH_P2P_STATE_DIR")
	if dir == "" {
		dir = DefaultStateDir
	}
	n := newP2PNetwork(dir, envDefaults(), log)
	n.restorePorts()
	plugin.ServeNetwork(n)
}
