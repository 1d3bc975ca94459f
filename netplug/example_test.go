package netplug_test

import (
	"context"
	"fmt"
	"log"

	"github.com/berth-dev/berth/netplug"
)

// A sandbox on the default network with a port published on the host's
// loopback. pid is the sandbox's PID 1, started and waiting.
func Example() {
	ctx := context.Background()
	pid := 12345
	nets, err := netplug.Open(nil)
	if err != nil {
		log.Fatal(err)
	}
	net, err := nets.Get(ctx, netplug.DefaultNetwork)
	if err != nil {
		log.Fatal(err)
	}
	ns := fmt.Sprintf("/proc/%d/ns/net", pid)
	a, err := net.Attach(ctx, "0123456789abcdef", ns, &netplug.AttachOptions{
		Hostname: "web",
		Ports:    []netplug.PortMapping{{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80}},
	})
	if err != nil {
		log.Fatal(err)
	}
	hosts := netplug.HostsFile(a, "web") // the sandbox's /etc/hosts
	resolv := a.DNS.ResolvConf()         // and /etc/resolv.conf
	fmt.Printf("%s on %v, %d+%d bytes of configuration\n", a.Interface, a.IPs, len(hosts), len(resolv))

	// ... the sandbox runs, and ends.
	if err := net.Detach(ctx, "0123456789abcdef", ns); err != nil {
		log.Fatal(err)
	}
}

// Sandboxes on a named network reach each other by name.
func ExampleNetworks_Create() {
	ctx := context.Background()
	nets, err := netplug.Open(nil)
	if err != nil {
		log.Fatal(err)
	}
	backend, err := nets.Create(ctx, "backend", &netplug.NetworkOptions{Internal: true})
	if err != nil {
		log.Fatal(err)
	}
	_ = backend // Attach sandboxes with AttachOptions{Hostname: ..., HostsFile: ...}
}
