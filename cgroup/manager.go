//go:build linux

package cgroup

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Mode is the layout of the host's cgroup hierarchies.
type Mode int

const (
	// Auto, in Options, asks NewManager to detect the layout.
	// Manager.Mode never returns it.
	Auto Mode = iota
	// V1 is one cgroup v1 hierarchy per controller and no cgroup2 mount.
	V1
	// Hybrid is v1 hierarchies for the controllers plus a cgroup2
	// hierarchy without controllers.
	Hybrid
	// V2 is a single cgroup2 hierarchy carrying every controller.
	V2
)

func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case V1:
		return "v1"
	case Hybrid:
		return "hybrid"
	case V2:
		return "v2"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

var (
	// ErrExists means Create found the cgroup already there, in at least
	// one hierarchy. A leftover from a crash can be taken over with Open.
	ErrExists = errors.New("cgroup already exists")
	// ErrNotFound means the cgroup exists in no hierarchy.
	ErrNotFound = errors.New("cgroup not found")
	// ErrInvalidName means a name is not a single path element matching
	// [A-Za-z0-9][A-Za-z0-9_.-]*, or collides with a cgroup interface file.
	ErrInvalidName = errors.New("invalid cgroup name")
	// ErrInvalidResources means a Resources field is out of range.
	ErrInvalidResources = errors.New("invalid cgroup resources")
)

// Options configure a Manager. The zero value detects everything.
type Options struct {
	// Parent is the path, below the root of each hierarchy, of the
	// directory every cgroup of the Manager is created in: "berth" (the
	// default), or a nested path such as "system.slice/ci.service/berth".
	// A leading slash changes nothing: the path is always taken from the
	// root of the hierarchy. Missing directories are made, and removed by
	// RemoveParent; existing ones are kept. The package documentation
	// says which paths are refused, and how systemd's units are treated.
	Parent string

	// Mode forces a layout instead of detecting one. Forcing V2 ignores
	// any v1 hierarchy; forcing V1 ignores any cgroup2 mount.
	Mode Mode

	// UnifiedMount is the cgroup2 mount point to use instead of the one
	// found in /proc/self/mountinfo.
	UnifiedMount string

	// V1Mounts maps cgroup v1 controller names (blkio, cpu, cpuacct,
	// cpuset, devices, freezer, memory, pids) to the mount point of their
	// hierarchy, replacing detection of every v1 hierarchy. Co-mounted
	// controllers share a mount point.
	V1Mounts map[string]string

	// Logger receives warnings about limits the host cannot apply and
	// debug records about cgroups created and removed. Default
	// slog.Default().
	Logger *slog.Logger
}

// v1Controllers are the v1 controllers a sandbox cgroup is created under.
var v1Controllers = []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"}

// v2Controllers are the controllers enabled for children of berth's parent
// on V2, when the root delegates them.
var v2Controllers = []string{"cpu", "io", "memory", "pids"}

// A Manager creates and finds berth's cgroups in one host layout. It is
// safe for concurrent use. Beside the layout it keeps only the BPF device
// programs its cgroups share (see Resources.Devices), each loaded once.
type Manager struct {
	mode    Mode
	parent  string            // path below each hierarchy's root, no leading slash
	unified string            // cgroup2 mount point; "" in V1 mode
	v1      map[string]string // v1 controller → mount point; empty in V2 mode
	log     *slog.Logger
	v2want  []string // controllers enabled down the path: v2Controllers, or a test's

	markFailed atomic.Bool // a mark could not be set; warned about once

	parentReady atomic.Bool // ensureParent has run
	// delegated are the controllers berth's V2 parent gives its children,
	// read when ensureParent prepares it (Enforces).
	delegated atomic.Pointer[[]string]
	devices   *devicePrograms
}

// NewManager detects (or takes from opts) the cgroup layout. It changes
// nothing on the host: berth's parent directories are made by Create.
func NewManager(opts Options) (*Manager, error) {
	parent, err := cleanParent(cmp.Or(opts.Parent, "berth"))
	if err != nil {
		return nil, err
	}
	if opts.Mode < Auto || opts.Mode > V2 {
		return nil, fmt.Errorf("cgroup: unknown mode %v", opts.Mode)
	}
	for ctrl := range opts.V1Mounts {
		if !slices.Contains(v1Controllers, ctrl) {
			return nil, fmt.Errorf("cgroup: V1Mounts: unknown controller %q", ctrl)
		}
	}

	l := layout{unified: opts.UnifiedMount, v1: opts.V1Mounts}
	needUnified := l.unified == "" && opts.Mode != V1
	needV1 := l.v1 == nil && opts.Mode != V2
	if needUnified || needV1 {
		found, err := readLayout("/proc/self/mountinfo")
		if err != nil {
			return nil, err
		}
		if needUnified {
			l.unified = found.unified
		}
		if needV1 {
			l.v1 = found.v1
		}
	}

	mode := opts.Mode
	switch mode {
	case Auto:
		switch {
		case len(l.v1) > 0 && l.unified != "":
			mode = Hybrid
		case len(l.v1) > 0:
			mode = V1
		case l.unified != "":
			mode = V2
		default:
			return nil, fmt.Errorf("cgroup: no cgroup hierarchy is mounted: %w", errors.ErrUnsupported)
		}
	case V1:
		l.unified = ""
	case V2:
		l.v1 = nil
	}
	if (mode == V2 || mode == Hybrid) && l.unified == "" {
		return nil, fmt.Errorf("cgroup: mode %v: no cgroup2 mount: %w", mode, errors.ErrUnsupported)
	}
	if (mode == V1 || mode == Hybrid) && len(l.v1) == 0 {
		return nil, fmt.Errorf("cgroup: mode %v: no cgroup v1 controller is mounted: %w", mode, errors.ErrUnsupported)
	}

	// Refuse to treat an ordinary directory as cgroupfs: Create would
	// otherwise make plain directories and Remove would rmdir them.
	if l.unified != "" {
		if err := checkFSType(l.unified, unix.CGROUP2_SUPER_MAGIC, "cgroup2"); err != nil {
			return nil, err
		}
	}
	v1 := make(map[string]string, len(l.v1))
	for ctrl, mnt := range l.v1 {
		if err := checkFSType(mnt, unix.CGROUP_SUPER_MAGIC, "cgroup v1"); err != nil {
			return nil, err
		}
		v1[ctrl] = filepath.Clean(mnt)
	}
	if l.unified != "" {
		l.unified = filepath.Clean(l.unified)
	}

	return &Manager{
		mode:    mode,
		parent:  parent,
		unified: l.unified,
		v1:      v1,
		log:     cmp.Or(opts.Logger, slog.Default()),
		v2want:  v2Controllers,
		devices: &devicePrograms{},
	}, nil
}

func checkFSType(dir string, magic int64, kind string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("cgroup: statfs %s: %w", dir, err)
	}
	if int64(st.Type) != magic {
		return fmt.Errorf("cgroup: %s is not a %s mount", dir, kind)
	}
	return nil
}

// Mode reports the layout the Manager uses.
func (m *Manager) Mode() Mode { return m.mode }

// Parent returns the path of the Manager's parent directory below the
// root of each hierarchy, without a leading slash ("berth", "a/b/c").
func (m *Manager) Parent() string { return m.parent }

// mounts returns every hierarchy root the Manager uses, each once: the v1
// mount points in name order, then the cgroup2 mount.
func (m *Manager) mounts() []string {
	return hierarchies(m.v1, m.unified)
}

// hierarchies returns the distinct v1 directories of v1 (co-mounted
// controllers share one) in name order, then unified if there is one.
func hierarchies(v1 map[string]string, unified string) []string {
	var dirs []string
	for _, dir := range v1 {
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	slices.Sort(dirs)
	if unified != "" {
		dirs = append(dirs, unified)
	}
	return dirs
}

// parentDirs returns berth's parent directory in every hierarchy.
func (m *Manager) parentDirs() []string {
	var dirs []string
	for _, mnt := range m.mounts() {
		dirs = append(dirs, filepath.Join(mnt, m.parent))
	}
	return dirs
}

func (m *Manager) cgroup(name string) *Cgroup {
	c := &Cgroup{
		name: name,
		rel:  "/" + m.parent + "/" + name,
		v1:   make(map[string]string, len(m.v1)),
		log:  m.log.With("cgroup", name),
		devs: m.devices,
	}
	if m.unified != "" {
		c.unified = filepath.Join(m.unified, m.parent, name)
	}
	for ctrl, mnt := range m.v1 {
		c.v1[ctrl] = filepath.Join(mnt, m.parent, name)
	}
	return c
}

// Create makes the cgroup name in every hierarchy and applies r to it (r
// may be nil). If the cgroup exists in any hierarchy it fails with
// ErrExists; if anything else fails, it removes what it made.
func (m *Manager) Create(name string, r *Resources) (*Cgroup, error) {
	if !validName(name) {
		return nil, fmt.Errorf("cgroup: create %q: %w", name, ErrInvalidName)
	}
	if r != nil {
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("cgroup: create %q: %w", name, err)
		}
	}
	// The parent is prepared once per Manager; if it has gone since (berth
	// gc removes an empty one), it is made again and the create retried.
	if !m.parentReady.Load() {
		if err := m.ensureParent(); err != nil {
			return nil, err
		}
		m.parentReady.Store(true)
	}
	c, err := m.create(name, r)
	if errors.Is(err, fs.ErrNotExist) {
		if err := m.ensureParent(); err != nil {
			return nil, err
		}
		c, err = m.create(name, r)
	}
	return c, err
}

func (m *Manager) create(name string, r *Resources) (*Cgroup, error) {
	c := m.cgroup(name)
	var made []string
	undo := func() {
		for _, dir := range slices.Backward(made) {
			if err := unix.Rmdir(dir); err != nil {
				m.log.Warn("cgroup: cannot undo partial create", "dir", dir, "err", err)
			}
		}
	}
	for _, dir := range c.dirs() {
		if err := os.Mkdir(dir, 0o755); err != nil {
			undo()
			if errors.Is(err, fs.ErrExist) {
				if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
					return nil, fmt.Errorf("cgroup: create %s: name of an interface file: %w", dir, ErrInvalidName)
				}
				return nil, fmt.Errorf("cgroup: create %s: %w", dir, ErrExists)
			}
			return nil, fmt.Errorf("cgroup: create: %w", err)
		}
		made = append(made, dir)
		m.mark(dir, madeCgroup)
	}

	// A v1 cpuset cgroup starts with no CPUs and no memory nodes, and the
	// kernel refuses to move a process into it until both are set.
	if dir := c.v1["cpuset"]; dir != "" {
		if err := copyCpuset(filepath.Dir(dir), dir); err != nil {
			undo()
			return nil, err
		}
	}
	if r != nil {
		if err := c.apply(r); err != nil {
			undo()
			return nil, err
		}
	}
	m.log.Debug("cgroup: created", "cgroup", name, "mode", m.mode)
	return c, nil
}

// Enforces reports whether the Manager's cgroups can take the limits of
// controller, named as on cgroup v2 ("memory", "pids", "cpu" or "io"): on
// V1 and Hybrid, whether its v1 hierarchy is mounted; on V2, whether
// berth's parent delegates it to its children, which it prepares first if
// need be. A caller with limits that are only defaults (a security
// preset's) can leave out what the host cannot enforce instead of failing
// a Create with errors.ErrUnsupported.
func (m *Manager) Enforces(controller string) (bool, error) {
	if m.mode != V2 {
		if controller == "io" {
			controller = "blkio"
		}
		_, ok := m.v1[controller]
		return ok, nil
	}
	if !m.parentReady.Load() {
		if err := m.ensureParent(); err != nil {
			return false, err
		}
		m.parentReady.Store(true)
	}
	return slices.Contains(*m.delegated.Load(), controller), nil
}

// enableControllers delegates to the children of dir (a directory of
// berth's parent path) the controllers limits need, among those dir itself
// was given. A controller that cannot be enabled is only logged: the
// limits that need it fail later with errors.ErrUnsupported, and sandboxes
// without them still work. But a dir that holds processes is an error
// that says so, since the kernel would refuse every controller for a
// reason the caller can fix.
func (m *Manager) enableControllers(dir string) error {
	avail, err := readFields(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	enabled, err := readFields(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	var missing []string
	for _, ctrl := range m.v2want {
		if slices.Contains(avail, ctrl) && !slices.Contains(enabled, ctrl) {
			missing = append(missing, ctrl)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	procs, err := readFields(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return err
	}
	if len(procs) > 0 {
		whose := ""
		if slices.Contains(procs, strconv.Itoa(os.Getpid())) {
			whose = ", berth's own among them"
		}
		return fmt.Errorf("cgroup: %s holds %d processes%s, and cgroup v2 gives no controllers (%s) to the children of a cgroup with processes: "+
			"move them into a leaf cgroup of their own (in a systemd unit: DelegateSubgroup=) or put berth's parent beside them: %w",
			dir, len(procs), whose, strings.Join(missing, ", "), ErrParentHasProcesses)
	}
	file := filepath.Join(dir, "cgroup.subtree_control")
	for _, ctrl := range missing {
		// One controller per write: a write naming several fails as a
		// whole if any of them cannot be enabled.
		if err := writeFile(file, "+"+ctrl); err != nil {
			hint := ""
			if errors.Is(err, unix.EBUSY) {
				hint = "the parent must hold no processes"
			}
			m.log.Warn("cgroup: cannot enable controller", "controller", ctrl, "file", file, "err", err, "hint", hint)
		}
	}
	return nil
}

// copyCpuset gives dir the CPUs and memory nodes of from, unless dir
// already has its own.
func copyCpuset(from, dir string) error {
	for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := readString(filepath.Join(dir, file))
		if err != nil {
			return err
		}
		if cur != "" {
			continue
		}
		val, err := readString(filepath.Join(from, file))
		if err != nil {
			return err
		}
		if val == "" {
			// from has no setting of its own (a mount of a non-root
			// cpuset cgroup may not); use what it effectively has.
			if val, err = readString(filepath.Join(from, strings.Replace(file, "cpuset.", "cpuset.effective_", 1))); err != nil {
				return err
			}
		}
		if err := writeFile(filepath.Join(dir, file), val); err != nil {
			return err
		}
	}
	return nil
}

// Open returns the existing cgroup name, for example to kill and remove
// what a crashed process left behind. It fails with ErrNotFound only if
// the cgroup exists in no hierarchy; a cgroup missing from some
// hierarchies is opened so that it can be removed.
func (m *Manager) Open(name string) (*Cgroup, error) {
	if !validName(name) {
		return nil, fmt.Errorf("cgroup: open %q: %w", name, ErrInvalidName)
	}
	c := m.cgroup(name)
	if !c.existsAnywhere() {
		return nil, fmt.Errorf("cgroup: open %s: %w", filepath.Join(m.parent, name), ErrNotFound)
	}
	return c, nil
}

// List returns, sorted, the names of the cgroups Create made in berth's
// parent, in any hierarchy. Directories someone else made there, and
// those of a nested parent path, are left out: a caller that removes
// what List returns must never remove those. An older berth marked
// nothing, and its parent was always one directory it owned: there, an
// unmarked cgroup named like a sandbox (see legacyCgroup) is listed too.
func (m *Manager) List() ([]string, error) {
	var names []string
	for _, dir := range m.parentDirs() {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		for _, e := range entries {
			if !e.IsDir() || !validName(e.Name()) || slices.Contains(names, e.Name()) {
				continue
			}
			made, err := madeBy(filepath.Join(dir, e.Name()))
			if err == nil && (made == madeCgroup || made == "" && m.legacyCgroup(e.Name())) {
				names = append(names, e.Name())
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// validName reports whether name is a single path element matching
// [A-Za-z0-9][A-Za-z0-9_.-]*, no longer than a file name may be.
func validName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case i > 0 && (b == '_' || b == '.' || b == '-'):
		default:
			return false
		}
	}
	return true
}

// A Cgroup is one sandbox's cgroup, present in every hierarchy of its
// Manager. It is safe for concurrent use.
type Cgroup struct {
	name    string
	rel     string            // "/parent/name": how /proc/PID/cgroup ends for members
	unified string            // directory in the cgroup2 hierarchy; "" in V1 mode
	v1      map[string]string // v1 controller → directory; empty in V2 mode
	log     *slog.Logger
	devs    *devicePrograms // the Manager's

	mu sync.Mutex // serialises Update, Freeze, Thaw, Kill and Remove
}

// Name returns the cgroup's name, as given to Create or Open.
func (c *Cgroup) Name() string { return c.name }

// dirs returns the cgroup's directory in every hierarchy, each once: v1
// directories in name order (co-mounted controllers share one), then the
// unified one.
func (c *Cgroup) dirs() []string {
	return hierarchies(c.v1, c.unified)
}

// JoinFiles opens, for writing, the files through which a single-threaded
// process moves itself into the cgroup by writing "0" to each: tasks in
// every v1 hierarchy, and, if unified is set, the unified hierarchy's
// cgroup.procs. Moving one thread into a v1 cgroup does not take the lock
// that moving a process by PID does, whose first taker after a quiet
// spell waits out an RCU grace period (milliseconds per start). Opened by
// the caller, the files also let a process that could not open them, root
// of a user namespace, move itself. The caller closes them.
func (c *Cgroup) JoinFiles(unified bool) ([]*os.File, error) {
	var files []*os.File
	for _, dir := range hierarchies(c.v1, "") {
		f, err := os.OpenFile(filepath.Join(dir, "tasks"), os.O_WRONLY, 0)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("cgroup: %s: %w", dir, ErrNotFound)
			}
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		files = append(files, f)
	}
	if unified && c.unified != "" {
		f, err := os.OpenFile(filepath.Join(c.unified, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		files = append(files, f)
	}
	return files, nil
}

// V2Dir returns the cgroup's directory in the unified hierarchy, whose
// descriptor can be passed to clone3 with CLONE_INTO_CGROUP. ok is false
// in V1 mode. In Hybrid mode a child started that way must still join the
// v1 hierarchies (JoinFiles(false)).
func (c *Cgroup) V2Dir() (dir string, ok bool) {
	return c.unified, c.unified != ""
}

func (c *Cgroup) existsAnywhere() bool {
	for _, dir := range c.dirs() {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return true
		}
	}
	return false
}
