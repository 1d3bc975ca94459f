package plugin

import (
	"context"
	"io"
	"net/netip"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
)

// ProtocolVersion is the version of berth's plugin protocol this package
// speaks: the go-plugin handshake's, and the v1 in the proto package
// berth.plugin.v1.
const ProtocolVersion = 1

// Kinds of plugin, as Info.Kind names them.
const (
	KindStorage = "storage"
	KindNetwork = "network"
)

// Capabilities a plugin may announce (Info.Capabilities).
const (
	CapDiff  = "diff"  // storage: Diff is served (the plugin implements Differ)
	CapIDMap = "idmap" // storage: Prepare honours the user namespace maps itself
	CapQuota = "quota" // storage: Prepare enforces DiskQuota and DiskInodes
	CapPorts = "ports" // network: Attach publishes ports
	CapDNS   = "dns"   // network: Attach honours the DNS settings it is given
)

// A StoragePlugin makes root filesystems; a storage plugin's main serves
// one with ServeStorage. Its methods are called from many goroutines at
// once, for different keys, and must honour their context.
type StoragePlugin interface {
	// Roots are the absolute directories the plugin keeps its rootfses
	// in. berth refuses a mount source outside them (and outside the
	// layer directories of the request), and refuses to open a plugin
	// with a root in /proc, /sys, /dev, /run/berth or berth's store (but
	// for the store's plugins/ directory).
	Roots() []string
	// Prepare makes a writable rootfs for req.Key and says how to mount
	// it. A key prepared already is an error that wraps ErrExists.
	Prepare(ctx context.Context, req *PrepareRequest) (*PrepareResult, error)
	// Release undoes Prepare; berth has unmounted the rootfs first. An
	// unknown key is an error that wraps ErrNotFound.
	Release(ctx context.Context, key string) error
	// List names the prepared keys.
	List(ctx context.Context) ([]string, error)
}

// A Differ is a StoragePlugin that can write the changes made to a
// rootfs since Prepare as an uncompressed OCI layer tar (capability
// "diff").
type Differ interface {
	Diff(ctx context.Context, key string, w io.Writer) error
}

// An OwnerShifter is a StoragePlugin whose Prepare honours
// PrepareRequest.UIDMap and GIDMap itself when ShiftsOwners says so
// (capability "idmap"). For other plugins berth idmaps the mounts marked
// IDMap.
type OwnerShifter interface {
	ShiftsOwners() bool
}

// A QuotaEnforcer is a StoragePlugin whose Prepare enforces DiskQuota and
// DiskInodes when EnforcesQuota says so (capability "quota"). berth does
// not send a quota to other plugins: it refuses the sandbox instead.
type QuotaEnforcer interface {
	EnforcesQuota() bool
}

// PrepareRequest asks a storage plugin for a rootfs.
type PrepareRequest struct {
	Key         string
	ImageDigest string  // the image manifest's digest
	Layers      []Layer // bottom first
	// UIDMap and GIDMap are the sandbox's user namespace maps, if it has
	// one.
	UIDMap, GIDMap []layerfs.IDMap
	// DiskQuota and DiskInodes, if not 0, cap the rootfs's bytes and
	// files (only for a QuotaEnforcer).
	DiskQuota, DiskInodes int64
	// Options are free-form, plugin-defined settings.
	Options map[string]string
}

// A Layer is one layer of an image as berth's store holds it. The paths
// are the store's: a plugin may read them and name UnpackedPath as an
// overlay lower directory, and must not write to them.
type Layer struct {
	Digest, DiffID string // "sha256:<hex>" of the blob and of the tar
	MediaType      string
	Size           int64
	UnpackedPath   string // the layer unpacked, with overlay whiteouts
	BlobPath       string
}

// PrepareResult is how to mount a prepared rootfs.
type PrepareResult struct {
	Mounts []Mount // in order; the first has Target ""
	Driver string  // what the plugin made, e.g. "tmpfs"
}

// A Mount is one mount berth performs to assemble a rootfs.
type Mount struct {
	Type    string   // "bind", "overlay" or "tmpfs"
	Source  string   // for a bind: absolute, clean, under the plugin's roots
	Target  string   // relative to the rootfs; "" for the rootfs itself
	Options []string // mount(8)-style; berth adds nosuid and nodev
	IDMap   bool     // berth shows it through the sandbox's user namespace (see Mount.idmap in storage.proto)
}

// A NetworkPlugin connects sandboxes' network namespaces; a network
// plugin's main serves one with ServeNetwork. Its methods are called from
// many goroutines at once, for different sandboxes, and must honour their
// context.
type NetworkPlugin interface {
	// Attach connects req.NetnsPath, sandbox req.ID's namespace. An id
	// attached already is an error that wraps ErrExists.
	Attach(ctx context.Context, req *AttachRequest) (*AttachResult, error)
	// Detach undoes Attach, from the id alone if need be: netnsPath, the
	// path Attach was given by berth, may name nothing by then. An
	// unknown id is an error that wraps ErrNotFound.
	Detach(ctx context.Context, id, netnsPath string) error
	// List names the attached ids.
	List(ctx context.Context) ([]string, error)
}

// A PortPublisher is a NetworkPlugin that publishes AttachRequest.Ports
// when PublishesPorts says so (capability "ports"); berth refuses ports
// for other plugins.
type PortPublisher interface {
	PublishesPorts() bool
}

// A DNSConfigurer is a NetworkPlugin that honours AttachRequest.DNS when
// ConfiguresDNS says so (capability "dns").
type DNSConfigurer interface {
	ConfiguresDNS() bool
}

// AttachRequest asks a network plugin to connect a sandbox.
type AttachRequest struct {
	ID string
	// NetnsPath names the sandbox's network namespace. ServeNetwork has
	// opened the path berth gave, checked that it is the namespace berth
	// meant, and passes a path to its own descriptor
	// (/proc/<plugin pid>/fd/<n>), which stays that namespace until
	// Attach returns.
	NetnsPath string
	Hostname  string
	Aliases   []string
	Ports     []netplug.PortMapping // only for a PortPublisher
	DNS       *netplug.DNSConfig    // only for a DNSConfigurer
	Options   map[string]string
}

// AttachResult is what a sandbox got from Attach.
type AttachResult struct {
	netplug.Attachment
	Routes []Route
}

// A Route is one route in the sandbox's namespace.
type Route struct {
	Destination netip.Prefix
	Gateway     netip.Addr
}

// Info describes a plugin.
type Info struct {
	Path         string   // the binary's
	Kind         string   // KindStorage or KindNetwork
	Name         string   // the author's name for it
	Version      string   // the author's version
	Protocol     int      // the negotiated protocol version
	Capabilities []string // Cap* values, sorted
	Roots        []string // storage: where its rootfses live
}

// Has reports whether the plugin announced capability c.
func (i Info) Has(c string) bool {
	for _, x := range i.Capabilities {
		if x == c {
			return true
		}
	}
	return false
}
