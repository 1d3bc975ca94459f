package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// DefaultStateDir is where the plugin records its links, one file per
// sandbox; BERTH_P2P_STATE_DIR names another. It is under /run so that a
// reboot, which takes the links away, takes the records with them.
const DefaultStateDir = "/run/berth/p2p-network"

// A link is the record of one sandbox's link. It is written before the
// link is made and removed after the link is gone, so that a plugin
// killed at any moment in between leaves a record its successor finds:
// List names the sandbox and Detach removes whatever was made.
type link struct {
	ID string `json:"id"`
	// HostIf is the host end's name; the sandbox's end is eth0.
	HostIf string `json:"hostIf"`
	// Block is the /31 the two ends are numbered from: the host end has
	// its first address, the sandbox its second.
	Block netip.Prefix `json:"block"`
	// Ports are the published ports, with the host ports chosen, and
	// Owner the berth process they were published for (ports.go).
	Ports []netplug.PortMapping `json:"ports,omitempty"`
	Owner *owner                `json:"owner,omitempty"`
}

func (l *link) hostAddr() netip.Addr    { return l.Block.Addr() }
func (l *link) sandboxAddr() netip.Addr { return l.Block.Addr().Next() }

// validID is the protocol's form of a sandbox id; it keeps an id from
// naming a file outside the state directory.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("sandbox id %q: not [A-Za-z0-9][A-Za-z0-9_.-]{0,127}: %w", id, plugin.ErrInvalid)
	}
	return nil
}

// A stateDir holds the records. Allocating an address and writing its
// record happen under an exclusive flock of the directory's lock file, so
// that plugin processes sharing the directory (each berth command starts
// its own) never hand out the same address or interface twice.
type stateDir struct {
	dir string
}

const (
	recordSuffix = ".json"
	lockName     = ".lock"
)

func (s *stateDir) path(id string) string { return filepath.Join(s.dir, id+recordSuffix) }

// lock takes the directory's lock; the returned function releases it.
// Each call opens the lock file anew: flock locks belong to an open file,
// so goroutines of one process exclude each other as processes do.
func (s *stateDir) lock() (unlock func(), err error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, lockName), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("state lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// read returns id's record; an id without one is ErrNotFound.
func (s *stateDir) read(id string) (*link, error) {
	b, err := os.ReadFile(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sandbox %s: %w", id, plugin.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	l := &link{}
	if err := json.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("record of sandbox %s: %w", id, err)
	}
	if l.ID != id || l.HostIf != hostIfName(id) || !l.Block.IsValid() || l.Block.Bits() != 31 {
		return nil, fmt.Errorf("record of sandbox %s: damaged", id)
	}
	return l, nil
}

// write records l, replacing any record of its id whole.
func (s *stateDir) write(l *link) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return atomicfile.Replace(s.path(l.ID), b, 0o600)
}

func (s *stateDir) remove(id string) error {
	err := os.Remove(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ids names the recorded sandboxes.
func (s *stateDir) ids() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), recordSuffix)
		if ok && e.Type().IsRegular() && !atomicfile.IsTemp(e.Name()) && validID.MatchString(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// all reads every record. A damaged one is an error: its address might
// be in use, so nothing is allocated until someone looks.
func (s *stateDir) all() ([]*link, error) {
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	links := make([]*link, 0, len(ids))
	for _, id := range ids {
		l, err := s.read(id)
		if errors.Is(err, plugin.ErrNotFound) {
			continue // detached meanwhile
		}
		if err != nil {
			return nil, err
		}
		links = append(links, l)
	}
	return links, nil
}

// sweepTemps removes the temporary files of writes a killed plugin left
// half done. Records are written only under the lock, so the caller,
// holding it, knows no write is in progress.
func (s *stateDir) sweepTemps() {
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if atomicfile.IsTemp(e.Name()) {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}
