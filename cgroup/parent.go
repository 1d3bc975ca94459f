//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotDelegated means the parent path goes through a systemd unit
	// (a .slice, .service or .scope cgroup) that systemd has not delegated:
	// systemd manages the inside of such a unit and would undo or fight
	// what berth does there. A parent inside a unit with Delegate=yes is
	// fine (systemd 251 and later mark those with the trusted.delegate
	// extended attribute, which is what berth checks).
	ErrNotDelegated = errors.New("cgroup parent is inside a systemd unit that is not delegated")
	// ErrParentHasProcesses means a cgroup on the parent path holds
	// processes, so cgroup v2 refuses to give controllers to its children
	// (the "no internal processes" rule): the processes must move into a
	// leaf cgroup of their own, or the parent must go beside them.
	ErrParentHasProcesses = errors.New("cgroup parent holds processes")
)

// madeXattr marks the directories this package made, with madeParent on
// the directories of a parent path and madeCgroup on the cgroups of
// Create. RemoveParent removes only the first; List reports only the
// second, so that neither a parent's own directory nor a cgroup someone
// else made there is ever taken for a leftover sandbox. trusted.* needs
// CAP_SYS_ADMIN to write, which a sandbox does not have.
const (
	madeXattr  = "trusted.berth.made"
	madeParent = "parent"
	madeCgroup = "cgroup"
)

// legacyParent is the parent every berth made by default before it
// marked its directories; an unmarked one is taken for an older berth's
// (RemoveParent removes it once empty, as that berth did).
const legacyParent = "berth"

// legacyCgroup reports whether an unmarked directory name in m's parent
// is a sandbox's cgroup made by an older berth, which marked nothing:
// its parent was a single directory it owned, and a sandbox's cgroup is
// named by its ID, 16 lowercase hex digits. A nested parent, which only
// a berth that marks can have made, never has any.
func (m *Manager) legacyCgroup(name string) bool {
	if strings.Contains(m.parent, "/") || len(name) != 16 {
		return false
	}
	for i := range len(name) {
		if c := name[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// delegateXattrs are the extended attributes systemd (251 and later) puts,
// with the value "1", on the cgroup of a unit with Delegate=yes: trusted.*
// from the system manager, user.* from a user manager.
var delegateXattrs = []string{"trusted.delegate", "user.delegate"}

// unitSuffixes end the names of the cgroups systemd makes for its units.
var unitSuffixes = []string{".slice", ".service", ".scope"}

// maxParentLen bounds a parent path, well below PATH_MAX once joined to a
// mount point and a cgroup name, and maxParentDepth its levels: each is a
// cgroup in every hierarchy (a memory cgroup costs the kernel memory and
// one of its 65535 IDs), and systemd's deepest paths have about six.
const (
	maxParentLen   = 2048
	maxParentDepth = 32
)

// cleanParent checks a parent path and returns it without a leading slash.
// "a/b/c" and "/a/b/c" both name a/b/c below the root of each hierarchy:
// berth's own cgroup, whatever it is, plays no part, because it usually
// holds processes (berth's), and cgroup v2 would then give the children no
// controllers. Every element must match [A-Za-z0-9][A-Za-z0-9_.@-]*; an
// empty element, "." and ".." are refused, so the path cannot leave the
// hierarchy or name its root.
func cleanParent(parent string) (string, error) {
	rel := strings.TrimPrefix(parent, "/")
	bad := func(why string) error {
		return fmt.Errorf("cgroup: parent %q: %s: %w", parent, why, ErrInvalidName)
	}
	switch {
	case rel == "":
		return "", bad("names the root of the hierarchy, which berth never writes to")
	case len(rel) > maxParentLen:
		return "", bad(fmt.Sprintf("longer than %d bytes", maxParentLen))
	case strings.Count(rel, "/") >= maxParentDepth:
		return "", bad(fmt.Sprintf("deeper than %d levels", maxParentDepth))
	}
	for elem := range strings.SplitSeq(rel, "/") {
		switch {
		case elem == "":
			return "", bad("empty path element (a doubled, leading or trailing slash)")
		case elem == "." || elem == "..":
			return "", bad(fmt.Sprintf("path element %q is not allowed", elem))
		case !validParentElem(elem):
			return "", bad(fmt.Sprintf("path element %q must match [A-Za-z0-9][A-Za-z0-9_.@-]*", elem))
		}
	}
	return rel, nil
}

// validParentElem is validName plus '@', which systemd's template units
// have (user@1000.service).
func validParentElem(elem string) bool {
	return validName(strings.ReplaceAll(elem, "@", "_"))
}

func isUnitName(elem string) bool {
	return slices.ContainsFunc(unitSuffixes, func(s string) bool {
		return strings.HasSuffix(elem, s) && len(elem) > len(s)
	})
}

// ensureParent makes the directories of the parent path that are missing,
// in every hierarchy, marks those it made as its own, and prepares the
// path to hold sandboxes: on v1 each new cpuset gets its parent's CPUs and
// memory nodes; on V2 the controllers limits need are enabled down the
// path. It is idempotent, so that a path left half-prepared by a crash is
// completed by the next Create. A parent removed concurrently
// (RemoveParent in another process) is made again.
func (m *Manager) ensureParent() error {
	var err error
	for range 3 {
		if err = m.prepareParent(); !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

func (m *Manager) prepareParent() error {
	elems := strings.Split(m.parent, "/")
	owned, err := m.checkSystemd(elems)
	if err != nil {
		return err
	}
	// What this call made goes again if it fails half way (a path
	// element that is an interface file in one hierarchy only, say).
	var made []string
	undo := func() {
		for _, dir := range slices.Backward(made) {
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				m.log.Warn("cgroup: cannot undo a partly made parent", "dir", dir, "err", err)
			}
		}
	}
	for _, mnt := range m.mounts() {
		dir := mnt
		for _, elem := range elems {
			above := dir
			dir = filepath.Join(dir, elem)
			ok, err := m.makeParentDir(dir, elem)
			if ok {
				made = append(made, dir)
			}
			if err == nil && mnt == m.v1["cpuset"] {
				err = copyCpuset(above, dir)
			}
			if err != nil {
				undo()
				return err
			}
		}
	}
	if m.mode != V2 {
		return nil
	}
	// Controllers are enabled from the top of what berth may write
	// down: each level can only give its children what it was given.
	for i := owned; i < len(elems); i++ {
		if err := m.enableControllers(filepath.Join(m.unified, filepath.Join(elems[:i+1]...))); err != nil {
			undo()
			return err
		}
	}
	delegated, err := readFields(filepath.Join(m.unified, m.parent, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	m.delegated.Store(&delegated)
	return nil
}

// makeParentDir makes dir, the path element elem, unless it exists, and
// marks it as berth's; made says whether it made it. It never makes a
// systemd unit's cgroup: only systemd can make a unit, and a directory
// named like one would be taken for it.
func (m *Manager) makeParentDir(dir, elem string) (made bool, err error) {
	if isUnitName(elem) {
		fi, err := os.Stat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return false, fmt.Errorf("cgroup: parent %s: %s names a systemd unit, which only systemd makes: start it with systemd first (with Delegate=yes), or name the directory without %s: %w",
				m.parent, dir, filepath.Ext(elem), ErrNotDelegated)
		case err != nil:
			return false, fmt.Errorf("cgroup: %w", err)
		case !fi.IsDir():
			return false, fmt.Errorf("cgroup: parent %s: %s is not a directory: %w", m.parent, dir, ErrInvalidName)
		}
		return false, nil
	}
	err = os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
			return false, fmt.Errorf("cgroup: parent %s: %s is an interface file: %w", m.parent, dir, ErrInvalidName)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cgroup: %w", err)
	}
	m.mark(dir, madeParent)
	return true, nil
}

// mark records that berth made dir. Without the mark (a kernel whose
// cgroupfs has no extended attributes) a parent directory is kept by
// RemoveParent, and a cgroup is not listed by List, which is the safe
// side of both.
func (m *Manager) mark(dir, what string) {
	if err := unix.Setxattr(dir, madeXattr, []byte(what), 0); err != nil {
		if !m.markFailed.Swap(true) {
			m.log.Warn("cgroup: cannot mark directories as berth's: parents berth makes will be kept, and berth gc will not sweep cgroups that lost their record", "dir", dir, "err", err)
		}
	}
}

// madeBy returns the mark of dir, "" if it has none, or an error
// wrapping fs.ErrNotExist if dir is gone.
func madeBy(dir string) (string, error) {
	buf := make([]byte, 16)
	n, err := unix.Getxattr(dir, madeXattr, buf)
	switch {
	case err == nil:
		return string(buf[:n]), nil
	case errors.Is(err, unix.ENOENT):
		return "", fmt.Errorf("cgroup: %s: %w", dir, fs.ErrNotExist)
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.ERANGE):
		return "", nil
	}
	return "", fmt.Errorf("cgroup: read mark of %s: %w", dir, err)
}

// checkSystemd refuses a parent path that would put berth's directories
// inside a systemd unit that is not delegated: systemd owns the inside of
// its units (it sets their children's controllers and may move or remove
// what it did not make). The deepest unit on the path decides, because a
// unit inside a delegated one belongs to the delegatee (a user manager
// marks its own delegated units). It returns the index of the first path
// element whose controllers berth may set: that unit's, or 0 if the path
// goes through no unit.
func (m *Manager) checkSystemd(elems []string) (owned int, err error) {
	unit := -1
	for i, elem := range elems {
		if isUnitName(elem) {
			unit = i
		}
	}
	if unit < 0 {
		return 0, nil
	}
	rel := filepath.Join(elems[:unit+1]...)
	for _, mnt := range m.mounts() {
		if isDelegated(filepath.Join(mnt, rel)) {
			return unit, nil
		}
	}
	if _, err := os.Stat(filepath.Join(m.mounts()[0], rel)); errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("cgroup: parent %s: %s names a systemd unit that does not exist; only systemd makes units: start it first, with Delegate=yes: %w",
			m.parent, rel, ErrNotDelegated)
	}
	how := "give its unit Delegate=yes and put the parent inside it"
	if strings.HasSuffix(rel, ".slice") {
		how = "a slice is never delegated: run berth in a service or scope with Delegate=yes inside it and put the parent inside that unit"
	}
	return 0, fmt.Errorf("cgroup: parent %s: systemd manages %s and has not delegated it (no trusted.delegate mark; systemd before 251 sets none): %s: %w",
		m.parent, rel, how, ErrNotDelegated)
}

// isDelegated reports whether systemd marked dir as a delegated unit.
func isDelegated(dir string) bool {
	buf := make([]byte, 8)
	for _, attr := range delegateXattrs {
		if n, err := unix.Getxattr(dir, attr, buf); err == nil && string(buf[:n]) == "1" {
			return true
		}
	}
	return false
}

// RemoveParent removes the directories of the parent path that berth
// made (it marks them when it makes them; an unmarked default "berth"
// is an older berth's), deepest first, from every
// hierarchy. It keeps every directory it did not make, and everything
// above it. While a cgroup is left in the parent it fails with an error
// wrapping EBUSY and removes nothing there; a parent that is already gone
// is fine. A Create racing with it makes the parent again.
func (m *Manager) RemoveParent() error {
	var errs []error
	m.parentReady.Store(false)
	elems := strings.Split(m.parent, "/")
	for _, mnt := range m.mounts() {
		for i := len(elems); i > 0; i-- {
			dir := filepath.Join(mnt, filepath.Join(elems[:i]...))
			made, err := madeBy(dir)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				errs = append(errs, err)
				break
			}
			if made != madeParent && !(made == "" && m.parent == legacyParent) {
				break
			}
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("cgroup: remove %s: %w", dir, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// WithParent returns a Manager for the same hierarchies as m with another
// parent path, to reach the cgroups of a sandbox that was made under it.
func (m *Manager) WithParent(parent string) (*Manager, error) {
	rel, err := cleanParent(parent)
	if err != nil {
		return nil, err
	}
	if rel == m.parent {
		return m, nil
	}
	return &Manager{
		mode:    m.mode,
		parent:  rel,
		unified: m.unified,
		v1:      m.v1,
		log:     m.log,
		v2want:  m.v2want,
		devices: m.devices,
	}, nil
}
