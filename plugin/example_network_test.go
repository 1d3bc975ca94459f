package plugin_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// A network plugin stands where a netplug network would: the sandbox
// attaches through it, and berth checks what the plugin says it made in
// the sandbox's namespace before the sandbox runs.
func ExampleOpenNetwork() {
	ctx := context.Background()
	n, err := plugin.OpenNetwork(ctx, "/usr/local/lib/berth/plugins/p2p-network", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()

	sb := sandbox.New("alpine:3.20", &sandbox.Options{
		Args:    []string{"ip", "-4", "addr", "show", "eth0"},
		Network: n,
		Stdout:  os.Stdout,
	})
	if _, err := sb.Run(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("the sandbox had", sb.Attachment().IPs)
}
