package netplug

import (
	"cmp"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"time"
)

// Where netplug looks for plugins and keeps its state unless told
// otherwise, and the default network.
const (
	// DefaultPluginDir holds the CNI plugins hack/build-cni.sh builds.
	DefaultPluginDir = "/usr/local/lib/berth/cni"
	// PluginDirEnv, when set, replaces DefaultPluginDir.
	PluginDirEnv = "BERTH_CNI_DIR"
	// DefaultConfigDir holds the definitions of named networks, which
	// outlive reboots.
	DefaultConfigDir = "/var/lib/berth/networks"
	// DefaultRunDir holds the state of attachments: IPAM leases, the CNI
	// result cache and attachment records. It is on tmpfs, like the
	// namespaces and interfaces it describes, so a reboot clears both.
	DefaultRunDir = "/run/berth/networks"

	// DefaultNetwork is the name of the default bridge network, which
	// Bridge returns; Networks.Get knows it also as "bridge".
	DefaultNetwork = "berth"
	// DefaultBridge is the default network's bridge device.
	DefaultBridge = "berth0"
	// DefaultSubnet is the default network's subnet. It is a private range
	// that other runtimes leave alone (Docker takes 172.17.0.0/16, podman
	// 10.88.0.0/16).
	DefaultSubnet = "10.213.0.0/16"
	// namedSubnets is where named networks without a subnet get a /24.
	namedSubnets = "10.214.0.0/16"
)

// Options say where netplug finds its plugins and keeps its state. The
// zero value means the defaults above.
type Options struct {
	// PluginDir is the only directory CNI plugins are looked up in; empty
	// means $BERTH_CNI_DIR, else DefaultPluginDir.
	PluginDir string
	// ConfigDir holds named networks' definitions; empty means
	// DefaultConfigDir.
	ConfigDir string
	// RunDir holds the attachments' state; empty means DefaultRunDir.
	// Processes that share sandboxes' networks must share it: port and
	// address bookkeeping is per RunDir.
	RunDir string
	// ResolvConf is the host's resolver configuration that sandboxes'
	// DNS settings come from; empty means /etc/resolv.conf.
	ResolvConf string
	// Default configures the default network, DefaultNetwork: a zero
	// Subnet means DefaultSubnet and an empty Bridge DefaultBridge.
	Default NetworkOptions
	// Logger receives diagnostics, plugins' stderr among them; nil
	// discards them.
	Logger *slog.Logger
}

// NetworkOptions configure a bridge network.
type NetworkOptions struct {
	// Subnet is the network's IPv4 subnet; the host's side of the bridge
	// takes its first address. Zero means a free /24 of 10.214.0.0/16 for
	// a named network (one no other network or host route overlaps).
	Subnet netip.Prefix
	// Bridge is the bridge device's name. It must start with "berth", so
	// that nothing netplug removes can be another program's; empty means
	// berth-<name>, or berth-<hash> for long names.
	Bridge string
	// Internal networks reach the host and each other but nothing beyond:
	// no default route and no masquerading (Docker's --internal).
	Internal bool
	// MTU of the bridge and the sandboxes' interfaces; 0 means the
	// kernel's default.
	MTU int
	// DNS, if set, replaces the host's resolver settings for sandboxes on
	// the network.
	DNS *DNSConfig
	// Sysctls are set in each sandbox's namespace (by the tuning plugin),
	// e.g. "net.ipv4.ping_group_range": "0 2147483647".
	Sysctls map[string]string
}

// NetworkInfo describes a bridge network.
type NetworkInfo struct {
	Name     string            `json:"name"`
	Bridge   string            `json:"bridge"`
	Subnet   netip.Prefix      `json:"subnet"`
	Gateway  netip.Addr        `json:"gateway"`
	Internal bool              `json:"internal,omitempty"`
	MTU      int               `json:"mtu,omitempty"`
	DNS      *DNSConfig        `json:"dns,omitempty"`
	Sysctls  map[string]string `json:"sysctls,omitempty"`
	Created  time.Time         `json:"created,omitzero"`
	// Default is set for the built-in default network.
	Default bool `json:"-"`
	// Sandboxes are the IDs of the sandboxes attached, as List saw them.
	Sandboxes []string `json:"-"`
}

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.PluginDir == "" {
		r.PluginDir = cmp.Or(os.Getenv(PluginDirEnv), DefaultPluginDir)
	}
	r.ConfigDir = cmp.Or(r.ConfigDir, DefaultConfigDir)
	r.RunDir = cmp.Or(r.RunDir, DefaultRunDir)
	r.ResolvConf = cmp.Or(r.ResolvConf, defaultResolvConf)
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	r.Default.Bridge = cmp.Or(r.Default.Bridge, DefaultBridge)
	if !r.Default.Subnet.IsValid() {
		r.Default.Subnet = netip.MustParsePrefix(DefaultSubnet)
	}
	if _, err := r.Default.info(DefaultNetwork); err != nil {
		return r, fmt.Errorf("default network: %w", err)
	}
	return r, nil
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	bridgeRE = regexp.MustCompile(`^berth[a-z0-9_.-]{0,10}$`)
	// Sandbox IDs become file names and CNI container IDs.
	idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
)

// info checks o and returns the network it describes. The subnet must be
// set by then.
func (o *NetworkOptions) info(name string) (*NetworkInfo, error) {
	p := o.Subnet
	switch {
	case !p.IsValid() || !p.Addr().Is4():
		return nil, fmt.Errorf("%w: subnet %s: only IPv4 subnets are supported", ErrInvalid, p)
	case p.Masked() != p:
		return nil, fmt.Errorf("%w: subnet %s has host bits set (did you mean %s?)", ErrInvalid, p, p.Masked())
	case p.Bits() > 29:
		return nil, fmt.Errorf("%w: subnet %s is too small", ErrInvalid, p)
	case !bridgeRE.MatchString(o.Bridge):
		return nil, fmt.Errorf("%w: bridge name %q: want berth followed by at most 10 of a-z 0-9 _ . -", ErrInvalid, o.Bridge)
	case o.MTU < 0 || o.MTU > 65535:
		return nil, fmt.Errorf("%w: MTU %d", ErrInvalid, o.MTU)
	}
	info := &NetworkInfo{
		Name:     name,
		Bridge:   o.Bridge,
		Subnet:   p,
		Gateway:  p.Addr().Next(),
		Internal: o.Internal,
		MTU:      o.MTU,
		Sysctls:  maps.Clone(o.Sysctls),
	}
	if o.DNS != nil {
		d := o.DNS.clone()
		info.DNS = &d
	}
	return info, nil
}

// cniName is the network's name as CNI knows it: it names the IPAM
// directory, the cache entries and the plugins' iptables chains.
func (i *NetworkInfo) cniName() string {
	if i.Default {
		return DefaultNetwork
	}
	return "berth-" + i.Name
}

func sortedInfos(infos []*NetworkInfo) []*NetworkInfo {
	slices.SortFunc(infos, func(a, b *NetworkInfo) int { return cmp.Compare(a.Name, b.Name) })
	return infos
}
