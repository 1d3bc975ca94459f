package netplug

import (
	"context"
	"errors"
	"net/netip"
	"os"
)

// Errors netplug returns; test for them with errors.Is.
var (
	// ErrNotFound means no network has the given name.
	ErrNotFound = errors.New("no such network")
	// ErrExists means a network of that name exists already.
	ErrExists = errors.New("network exists")
	// ErrInUse means sandboxes are still attached to the network.
	ErrInUse = errors.New("network in use")
	// ErrReserved means the name belongs to a built-in network.
	ErrReserved = errors.New("network name reserved")
	// ErrInvalid wraps a malformed name, ID, path, subnet, port mapping
	// or option.
	ErrInvalid = errors.New("invalid argument")
	// ErrAttached means the sandbox is attached to the network already.
	ErrAttached = errors.New("sandbox already attached")
	// ErrPortInUse means a published host port is taken, by another
	// sandbox or by a program on the host.
	ErrPortInUse = errors.New("host port in use")
	// ErrNoPlugin means a CNI plugin is missing from the plugin directory.
	ErrNoPlugin = errors.New("CNI plugin not found")
	// ErrHostNamespace means Attach was given the caller's own network
	// namespace, which the plugins would rewire.
	ErrHostNamespace = errors.New("refusing to attach the host's network namespace")
	// ErrNoSubnet means no free subnet was left to give a new network.
	ErrNoSubnet = errors.New("no free subnet")
)

// A Network connects sandboxes' network namespaces.
type Network interface {
	// Attach connects the network namespace at netnsPath (for example
	// /proc/<pid>/ns/net of a sandbox's PID 1, alive and waiting) for the
	// sandbox id, and returns what the sandbox needs to know.
	Attach(ctx context.Context, id, netnsPath string, opts *AttachOptions) (*Attachment, error)
	// Detach undoes Attach. It is idempotent, and works from the on-disk
	// record alone after a crash, when netnsPath may be gone.
	Detach(ctx context.Context, id, netnsPath string) error
}

// AttachOptions say how a sandbox is attached. The zero value is valid.
type AttachOptions struct {
	// Hostname and Aliases are the names other sandboxes on the same
	// named network know this one by.
	Hostname string
	Aliases  []string
	// Ports are published on the host.
	Ports []PortMapping
	// DNS, if set, replaces the network's DNS settings for this sandbox.
	DNS *DNSConfig
	// HostsFile, if set, is a host path that netplug writes the sandbox's
	// /etc/hosts to (HostsFile's content) at Attach, and rewrites in
	// place whenever a sandbox joins or leaves the same named network, so
	// that a bind mount of it stays current inside the sandbox.
	HostsFile string
	// ExtraHosts are more /etc/hosts entries (Docker's --add-host), kept
	// whenever netplug rewrites the file.
	ExtraHosts []HostEntry
}

// A PortMapping publishes a sandbox's port on the host.
type PortMapping struct {
	// HostIP is the host address to listen on; empty means all of them.
	// 127.0.0.1 works too: the host's loopback reaches the sandbox (the
	// bridge gets route_localnet, and berth's filters keep the host's
	// loopback out of the sandboxes' reach all the same).
	HostIP string `json:"hostIP,omitempty"`
	// HostPort 0 means any free port; Attachment.Ports says which.
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
	// Protocol is "tcp" (the default) or "udp".
	Protocol string `json:"protocol"`
}

// An Attachment is what a sandbox needs to know about its network.
type Attachment struct {
	Network   string         // the network's name
	Interface string         // in the sandbox's namespace, e.g. "eth0"
	IPs       []netip.Prefix // the sandbox's addresses, with their subnets
	Gateway   netip.Addr     // the host's side, the default route's next hop
	// Ports are the published ports, with the host ports chosen.
	Ports []PortMapping
	// Hosts are the other sandboxes on the same named network.
	Hosts []HostEntry
	DNS   DNSConfig
}

// A HostEntry is one line of /etc/hosts.
type HostEntry struct {
	IP    netip.Addr `json:"ip"`
	Names []string   `json:"names"`
}

// DNSConfig is the resolver configuration of a sandbox (resolv.conf).
type DNSConfig struct {
	Nameservers []netip.Addr `json:"nameservers,omitempty"`
	Search      []string     `json:"search,omitempty"`
	Options     []string     `json:"options,omitempty"`
}

// None returns the network of a sandbox with nothing but its own
// loopback, which the sandbox brings up itself: Attach and Detach do
// nothing.
func None() Network { return noneNetwork{} }

// Host returns the host's own network: the sandbox does not get a network
// namespace of its own (see IsHost), and Attach only reports the host's
// resolver configuration, loopback name servers included, since the
// sandbox can reach them.
func Host() Network { return hostNetwork{} }

// IsHost reports whether n is the host's network, for which a sandbox must
// not make a network namespace.
func IsHost(n Network) bool {
	_, ok := n.(hostNetwork)
	return ok
}

type noneNetwork struct{}

func (noneNetwork) Attach(ctx context.Context, id, netnsPath string, opts *AttachOptions) (*Attachment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &Attachment{Network: "none"}, nil
}

func (noneNetwork) Detach(ctx context.Context, id, netnsPath string) error { return nil }

type hostNetwork struct{}

func (hostNetwork) Attach(ctx context.Context, id, netnsPath string, opts *AttachOptions) (*Attachment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a := &Attachment{Network: "host"}
	if opts != nil && opts.DNS != nil {
		a.DNS = opts.DNS.clone()
	} else if data, err := os.ReadFile(defaultResolvConf); err == nil {
		a.DNS = parseResolvConf(data)
	}
	return a, nil
}

func (hostNetwork) Detach(ctx context.Context, id, netnsPath string) error { return nil }
