// Command p2p-network is a berth network plugin that connects each
// sandbox by a point-to-point veth pair of its own, with no bridge, no
// iptables and no CNI. See README.md.
package main

import (
	"os"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	dir := os.Getenv("BERTH_P2P_STATE_DIR")
	if dir == "" {
		dir = DefaultStateDir
	}
	n := newP2PNetwork(dir, envDefaults(), plugin.Logger())
	n.restorePorts()
	plugin.ServeNetwork(n)
}
