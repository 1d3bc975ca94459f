package netplug

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A record is what netplug knows of one attachment, on disk under
// RunDir/attachments/<CNI network>/<id>.json. It is written before the
// plugins run, so that whatever they leave can be found and undone after
// a crash, and it holds everything Detach needs: the configuration the
// plugins were run with, the namespace's identity and the ports.
type record struct {
	ID      string `json:"id"`
	Network string `json:"network"`
	// CNIName is the network's name in CNI, which names this record's
	// directory, its cache entry and its plugins' iptables chains.
	CNIName string          `json:"cniNetwork"`
	IfName  string          `json:"ifName"`
	NetNS   string          `json:"netns"`
	NS      nsID            `json:"nsID"`
	Config  json.RawMessage `json:"config"`
	// Named is set on named networks, whose sandboxes know each other.
	Named     bool           `json:"named,omitempty"`
	Hostname  string         `json:"hostname,omitempty"`
	Aliases   []string       `json:"aliases,omitempty"`
	Ports     []PortMapping  `json:"ports,omitempty"`
	IPs       []netip.Prefix `json:"ips,omitempty"`
	Gateway   netip.Addr     `json:"gateway,omitzero"`
	HostsFile string         `json:"hostsFile,omitempty"`
	// ExtraHosts go into the hosts file after the peers.
	ExtraHosts []HostEntry `json:"extraHosts,omitempty"`
	Created    time.Time   `json:"created"`
	// Port is the host's end of the sandbox's veth on a berth bridge,
	// whose packet filter Detach removes, and PortMAC its MAC address,
	// which tells it from a later interface of the same name.
	Port    string `json:"port,omitempty"`
	PortMAC string `json:"portMAC,omitempty"`
	// Result is what the last plugin to succeed returned: the whole
	// list's result once Attach succeeded, or that of the plugins before
	// the one that failed. DEL finds a plugin's work through it when
	// libcni's cache, which has only whole lists' results, has none.
	Result json.RawMessage `json:"result,omitempty"`
}

func (r *record) names() []string {
	var n []string
	if r.Hostname != "" {
		n = append(n, r.Hostname)
	}
	return append(n, r.Aliases...)
}

// An nsID identifies a namespace for as long as it exists: the device and
// inode of its nsfs file. A path such as /proc/<pid>/ns/net does not: the
// PID may be reused.
type nsID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

const nsfsMagic = 0x6e736673 // NSFS_MAGIC

// identify returns the identity of the network namespace at path.
func identify(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return nsID{Dev: st.Dev, Ino: st.Ino}, nil
}

// identifyNetNS is identify for a path that must be a namespace file.
func identifyNetNS(path string) (nsID, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return nsID{}, fmt.Errorf("%w: network namespace %s: %w", ErrInvalid, path, err)
	}
	if sfs.Type != nsfsMagic {
		return nsID{}, fmt.Errorf("%w: %s is not a namespace file", ErrInvalid, path)
	}
	return identify(path)
}

// isHostNetNS reports whether id is the caller's network namespace, or
// PID 1's: attaching either would rewire the host.
func isHostNetNS(id nsID) bool {
	for _, p := range []string{"/proc/self/ns/net", "/proc/thread-self/ns/net", "/proc/1/ns/net"} {
		if h, err := identify(p); err == nil && h == id {
			return true
		}
	}
	return false
}

func (n *Networks) attachmentsDir(cniName string) string {
	return filepath.Join(n.opts.RunDir, "attachments", cniName)
}

func (n *Networks) recordPath(cniName, id string) string {
	return filepath.Join(n.attachmentsDir(cniName), id+".json")
}

// writeRecord replaces r's file atomically, so that a reader sees the old
// record or the new one. With excl, it fails with ErrAttached if the file
// exists; only one attacher can win that.
func (n *Networks) writeRecord(r *record, cniName string, excl bool) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	dir := n.attachmentsDir(cniName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := n.recordPath(cniName, r.ID)
	tmp, err := os.CreateTemp(dir, ".tmp-"+r.ID+"-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if excl {
			// link(2) fails if the name exists, where rename would replace.
			err = os.Link(tmp.Name(), path)
			if errors.Is(err, fs.ErrExist) {
				err = fmt.Errorf("%w: %s on %s", ErrAttached, r.ID, r.Network)
			}
			os.Remove(tmp.Name())
			return err
		}
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func readRecord(path string) (*record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("attachment record %s: %w", path, err)
	}
	return &r, nil
}

// records reads the attachments to the CNI network cniName, or to every
// network if cniName is empty. Unreadable records are logged and skipped.
func (n *Networks) records(cniName string) ([]*record, error) {
	pattern := filepath.Join(n.opts.RunDir, "attachments", "*", "*.json")
	if cniName != "" {
		pattern = filepath.Join(n.attachmentsDir(cniName), "*.json")
	}
	paths, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	var recs []*record
	for _, p := range paths {
		if strings.HasPrefix(filepath.Base(p), ".") {
			continue
		}
		r, err := readRecord(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // detached meanwhile
		}
		if err != nil {
			n.log.Warn("skipping unreadable attachment record", "path", p, "err", err)
			continue
		}
		recs = append(recs, r)
	}
	return recs, nil
}
