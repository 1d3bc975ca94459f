package netplug_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/berth-dev/berth/netplug"
)

// exampleNetworks opens networks of the example's own: their definitions
// and leases in a temporary directory, and a default network on a bridge
// and subnet no real berth uses, so that the examples neither see nor
// change a real one. A real program would call netplug.Open(nil). done
// removes what the example left: its bridges, then the directory.
func exampleNetworks() (nets *netplug.Networks, done func()) {
	dir, err := os.MkdirTemp("", "berth-example-")
	if err != nil {
		log.Fatal(err)
	}
	nets, err = netplug.Open(&netplug.Options{
		ConfigDir: filepath.Join(dir, "networks"),
		RunDir:    filepath.Join(dir, "run"),
		Default:   netplug.NetworkOptions{Bridge: "berthex0", Subnet: netip.MustParsePrefix("10.216.201.0/24")},
	})
	if err != nil {
		log.Fatal(err)
	}
	return nets, func() {
		if err := nets.Prune(context.Background()); err != nil {
			log.Print(err)
		}
		os.RemoveAll(dir)
	}
}

// sandboxNamespace starts a process in a network namespace of its own, as
// a sandbox's PID 1 is, and returns the path of that namespace; stop
// ends the process, and so the namespace.
func sandboxNamespace() (netns string, stop func()) {
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// A sandbox on the default network with a port published on the host's
// loopback.
func Example() {
	ctx := context.Background()
	nets, done := exampleNetworks()
	defer done()
	ns, stop := sandboxNamespace()
	defer stop()

	net, err := nets.Get(ctx, netplug.DefaultNetwork)
	if err != nil {
		log.Fatal(err)
	}
	a, err := net.Attach(ctx, "0123456789abcdef", ns, &netplug.AttachOptions{
		Hostname: "web",
		Ports:    []netplug.PortMapping{{HostIP: "127.0.0.1", HostPort: 18080, ContainerPort: 80}},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(a.Interface, "on", a.IPs)
	hosts := netplug.HostsFile(a, "web") // the sandbox's /etc/hosts
	_ = a.DNS.ResolvConf()               // and /etc/resolv.conf
	fmt.Printf("%s", hosts)

	// ... the sandbox runs, and ends.
	if err := net.Detach(ctx, "0123456789abcdef", ns); err != nil {
		log.Fatal(err)
	}
	// Output:
	// eth0 on [10.216.201.2/24]
	// # written by berth
	// 127.0.0.1	localhost
	// ::1	localhost ip6-localhost ip6-loopback
	// ff02::1	ip6-allnodes
	// ff02::2	ip6-allrouters
	// 10.216.201.2	web
}

// Sandboxes on a named network reach each other by name.
func ExampleNetworks_Create() {
	ctx := context.Background()
	nets, done := exampleNetworks()
	defer done()

	backend, err := nets.Create(ctx, "backend", &netplug.NetworkOptions{
		Subnet:   netip.MustParsePrefix("10.216.202.0/24"),
		Internal: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"db", "app"} {
		ns, stop := sandboxNamespace()
		defer stop()
		a, err := backend.Attach(ctx, "sandbox-"+name, ns, &netplug.AttachOptions{Hostname: name})
		if err != nil {
			log.Fatal(err)
		}
		defer backend.Detach(ctx, "sandbox-"+name, ns)
		fmt.Println(name, "on", a.IPs)
	}
	hosts, err := nets.Hosts(ctx, "backend")
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range hosts {
		fmt.Println(h.IP, h.Names)
	}
	// Output:
	// db on [10.216.202.2/24]
	// app on [10.216.202.3/24]
	// 10.216.202.2 [db]
	// 10.216.202.3 [app]
}
