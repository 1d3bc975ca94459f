package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
)

// A container is what `berth run -d` leaves in the state directory: a
// record that outlives the sandboxes it runs, one after another when a
// restart policy or `berth restart` starts it again, until `berth rm`.
//
//	<state>/containers/<ID>/config.json  the record (containerRecord)
//	<state>/containers/<ID>/log, log.1   the supervisor's log of the output
//	<state>/containers/<ID>/exit.json    the supervisor's record of the end
//	<state>/containers/names/<name>      a symbolic link to <ID>
//
// The ID is that of the container's first sandbox. A name is taken with
// symlink(2), which fails if it exists, so two `run --name db` at once
// cannot both win; it stays taken until `berth rm`, the container exited
// or not. Changes to a record are made under a flock(2) of its directory
// (updateContainer), so that the reaper, stop and rm do not undo each
// other's; readers need none, the record being replaced atomically.

const (
	containersDir   = "containers"
	containerConfig = "config.json"
	containerLog    = "log"
	containerExit   = "exit.json"
)

// Container statuses (containerRecord.Status).
const (
	statusCreated    = "created"    // its sandbox is starting
	statusRunning    = "running"    // its sandbox runs, supervised
	statusRestarting = "restarting" // ended; the reaper starts it again
	statusExited     = "exited"     // ended, and stays so until started or removed
)

// containerRecord is a container's config.json.
type containerRecord struct {
	ID      string            `json:"id"`
	Name    string            `json:"name,omitempty"`
	Created time.Time         `json:"created"`
	Image   string            `json:"image"`
	Command []string          `json:"command,omitempty"` // the arguments after IMAGE
	Labels  map[string]string `json:"labels,omitempty"`
	// Argv is berth's command line that made the container, global
	// flags included, which starting it again runs once more; Dir is
	// the directory it ran in.
	Argv []string `json:"argv"`
	Dir  string   `json:"dir"`
	// Restart is the restart policy, as --restart gave it.
	Restart    restartPolicy `json:"restart"`
	AutoRemove bool          `json:"autoRemove,omitempty"`
	// StopTimeout is --stop-timeout, in seconds: berth stop's grace
	// when it is given no -t.
	StopTimeout *int `json:"stopTimeout,omitempty"`

	// Last is what the record of its last sandbox said as that sandbox
	// started (lastSandbox): for ps and inspect once it has gone (the
	// command line PID 1 ran, its environment, mounts and limits), and
	// the image digest its restarts run and image rm keeps.
	Last *sandbox.State `json:"last,omitempty"`

	// SandboxID is the ID of the container's current sandbox, or of its
	// last one once it has exited.
	SandboxID    string `json:"sandboxId,omitempty"`
	RestartCount int    `json:"restartCount"`
	// Generation counts the starts asked for: a start's child goes
	// ahead only if it is the latest (see envContainer).
	Generation int    `json:"generation"`
	Status     string `json:"status"`
	// Stopped means `berth stop` (or rm, or restart) ended it: a restart
	// policy does not start it again.
	Stopped bool `json:"stopped,omitempty"`
	// Restarting means berth restart stopped it, to start it again: an
	// --rm container is not removed meanwhile.
	Restarting bool      `json:"restarting,omitempty"`
	ExitCode   int       `json:"exitCode"`
	Signal     int       `json:"signal,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
	// Supervisor is the process that starts the current sandbox: it
	// becomes its supervisor, then its reaper, then (for a restart
	// policy) the start of the next, all with one PID. Once it is dead,
	// no one will record the end of a sandbox the record says starts or
	// runs (see orphaned). Nil until berth restart's start claims the
	// record, and in records made before it was kept.
	Supervisor *processRef `json:"supervisor,omitempty"`
	// Ports are the published ports of the current sandbox, with the
	// host ports bound.
	Ports []netplug.PortMapping `json:"ports,omitempty"`
	// Error says why the container's last start, or its reaping, failed.
	Error string `json:"error,omitempty"`
}

// Running reports whether the record says a sandbox of the container is
// starting or running.
func (c *containerRecord) Running() bool {
	return c.Status == statusCreated || c.Status == statusRunning
}

// A processRef names a process for as long as it lives: its PID and
// its start time (in clock ticks after boot), as sandbox.State.Host does.
type processRef struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

// supervisorGone reports whether c names its supervisor's process, and
// that process is dead.
func (c *containerRecord) supervisorGone() bool {
	return c.Supervisor != nil && !c.Supervisor.alive()
}

// alive reports whether the process p names runs: a zombie does not (a
// supervisor killed with -9 stays one until an init that may be slow to
// reap it does, and it holds no lock and will write nothing).
func (p *processRef) alive() bool {
	now, zombie, err := readProcessRef(p.PID)
	return err == nil && now.StartTime == p.StartTime && (!zombie || threadLives(p.PID))
}

// threadLives reports whether a thread of process pid other than its
// leader runs. A process that calls execve from a thread other than its
// leader (Go's syscall.Exec runs on whichever thread it is on, as a
// reaper's restart does) shows its leader as a zombie until the calling
// thread has taken the leader's place, PID and start time included: it
// is not dead meanwhile, and taking it for dead made wait and stop
// reclaim a container just as it started again.
func threadLives(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Name() == strconv.Itoa(pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

// thisProcess names this process.
func thisProcess() (*processRef, error) {
	p, _, err := readProcessRef(os.Getpid())
	return p, err
}

// readProcessRef reads /proc/<pid>/stat: the process's start time, and
// whether it is a zombie.
func readProcessRef(pid int) (p *processRef, zombie bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false, err
	}
	// The command name may hold spaces and parentheses: the fields are
	// counted from its last closing parenthesis.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 20 {
		return nil, false, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return nil, false, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return &processRef{PID: pid, StartTime: start}, f[0] == "Z" || f[0] == "X", nil
}

// restartPolicy is --restart: no, on-failure[:N] or always.
type restartPolicy struct {
	Name       string `json:"name"` // "no", "on-failure" or "always"
	MaxRetries int    `json:"maxRetries,omitempty"`
}

func (p restartPolicy) String() string {
	if p.Name == "on-failure" && p.MaxRetries > 0 {
		return p.Name + ":" + strconv.Itoa(p.MaxRetries)
	}
	return p.Name
}

// parseRestartPolicy reads --restart.
func parseRestartPolicy(s string) (restartPolicy, error) {
	name, count, hasCount := strings.Cut(s, ":")
	p := restartPolicy{Name: name}
	switch name {
	case "no", "always", "unless-stopped":
		if hasCount {
			return p, fmt.Errorf("--restart %s: only on-failure takes a count", clip.Quote(s))
		}
		if name == "unless-stopped" {
			// Without a daemon nothing restarts at boot: it is always.
			p.Name = "always"
		}
	case "on-failure":
		if hasCount {
			n, err := strconv.Atoi(count)
			if err != nil || n < 0 {
				return p, fmt.Errorf("--restart %s: want on-failure:N with N a count of restarts", clip.Quote(s))
			}
			p.MaxRetries = n
		}
	default:
		return p, fmt.Errorf("--restart %s: want no, on-failure[:N] or always", clip.Quote(s))
	}
	return p, nil
}

// shouldRestart reports whether the policy starts again a container that
// ended with code, having been restarted count times already.
func (p restartPolicy) shouldRestart(code, count int) bool {
	switch p.Name {
	case "always":
		return true
	case "on-failure":
		return code != 0 && (p.MaxRetries == 0 || count < p.MaxRetries)
	}
	return false
}

// containerIDRE is what a container's directory is named: a sandbox ID.
var containerIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// containerNameRE is what a name may be, as for sandboxes (sandbox.Options
// checks the same): nothing that could be a path, a space or a newline.
var containerNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func checkContainerName(name string) error {
	if len(name) > sandbox.MaxNameLength || !containerNameRE.MatchString(name) {
		return fmt.Errorf("--name %s: a name is 1 to %d of letters, digits, '_', '.' and '-', starting with a letter or digit", clip.Quote(name), sandbox.MaxNameLength)
	}
	return nil
}

func containersRoot(stateRoot string) string {
	if stateRoot == "" {
		stateRoot = sandbox.DefaultStateDir
	}
	return filepath.Join(stateRoot, containersDir)
}

func containerDir(stateRoot, id string) string {
	return filepath.Join(containersRoot(stateRoot), id)
}

func nameLink(stateRoot, name string) string {
	return filepath.Join(containersRoot(stateRoot), "names", name)
}

// errContainerNotFound means no container has the name or ID asked for.
var errContainerNotFound = errors.New("no such container")

// createContainer makes the directory and record of a new container,
// and takes its name. A name in use fails with sandbox.ErrNameInUse,
// leaving nothing behind.
func createContainer(stateRoot string, c *containerRecord) error {
	if !containerIDRE.MatchString(c.ID) {
		return fmt.Errorf("container ID %s: not a sandbox ID", clip.Quote(c.ID))
	}
	root := containersRoot(stateRoot)
	if err := os.MkdirAll(filepath.Join(root, "names"), 0o700); err != nil {
		return err
	}
	dir := containerDir(stateRoot, c.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := writeContainer(dir, c); err != nil {
		os.RemoveAll(dir)
		return err
	}
	if c.Name != "" {
		if err := os.Symlink(c.ID, nameLink(stateRoot, c.Name)); err != nil {
			os.RemoveAll(dir)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("name %s: %w", c.Name, sandbox.ErrNameInUse)
			}
			return err
		}
	}
	return nil
}

func writeContainer(dir string, c *containerRecord) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Replace(filepath.Join(dir, containerConfig), append(b, '\n'), 0o600)
}

// readContainer reads the record in the container directory dir.
func readContainer(dir string) (*containerRecord, error) {
	b, err := os.ReadFile(filepath.Join(dir, containerConfig))
	if err != nil {
		return nil, err
	}
	var c containerRecord
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, containerConfig), err)
	}
	if c.ID != filepath.Base(dir) {
		return nil, fmt.Errorf("%s: names container %s", filepath.Join(dir, containerConfig), clip.Quote(c.ID))
	}
	return &c, nil
}

// updateContainer changes the record of container id with fn, under the
// lock of its directory. A container removed meanwhile fails with
// errContainerNotFound.
func updateContainer(stateRoot, id string, fn func(*containerRecord) error) (*containerRecord, error) {
	dir := containerDir(stateRoot, id)
	unlock, err := lockContainer(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	c, err := readContainer(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", id, errContainerNotFound)
	}
	if err != nil {
		return nil, err
	}
	if err := fn(c); err != nil {
		return c, err
	}
	return c, writeContainer(dir, c)
}

// lockContainer takes the exclusive lock of the container directory dir.
func lockContainer(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", filepath.Base(dir), errContainerNotFound)
	}
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// removeContainer removes container id's record, logs and name.
func removeContainer(stateRoot, id string) error {
	dir := containerDir(stateRoot, id)
	unlock, err := lockContainer(dir)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := readContainer(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed by another rm (or a reaper's --rm) while this one
		// waited for the lock.
		return fmt.Errorf("container %s: %w", id, errContainerNotFound)
	}
	if err == nil && c.Name != "" {
		link := nameLink(stateRoot, c.Name)
		if target, err := os.Readlink(link); err == nil && target == id {
			if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	// Renamed first, so that a reader never sees half a directory, nor a
	// reaper waiting for the lock writes into one.
	gone := filepath.Join(containersRoot(stateRoot), ".removing-"+id)
	if err := os.Rename(dir, gone); err != nil {
		return err
	}
	return os.RemoveAll(gone)
}

// listContainers returns the records of every container under stateRoot,
// oldest first. Records that cannot be read are left out.
func listContainers(stateRoot string) ([]*containerRecord, error) {
	entries, err := os.ReadDir(containersRoot(stateRoot))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*containerRecord
	for _, e := range entries {
		if !e.IsDir() || !containerIDRE.MatchString(e.Name()) {
			continue
		}
		c, err := readContainer(filepath.Join(containersRoot(stateRoot), e.Name()))
		if err != nil {
			continue
		}
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b *containerRecord) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// loadContainer returns the container nameOrID names: its name first,
// then its ID, the ID of its current sandbox, or a unique prefix of
// either (at least 4 characters). It fails with errContainerNotFound, or
// sandbox.ErrAmbiguousID.
func loadContainer(stateRoot, nameOrID string) (*containerRecord, error) {
	if containerNameRE.MatchString(nameOrID) && len(nameOrID) <= sandbox.MaxNameLength {
		if id, err := os.Readlink(nameLink(stateRoot, nameOrID)); err == nil && containerIDRE.MatchString(id) {
			if c, err := readContainer(containerDir(stateRoot, id)); err == nil && c.Name == nameOrID {
				return c, nil
			}
		}
	}
	if containerIDRE.MatchString(nameOrID) {
		// A whole ID: its own record, without reading every other's.
		if c, err := readContainer(containerDir(stateRoot, nameOrID)); err == nil && c.ID == nameOrID {
			return c, nil
		}
	}
	all, err := listContainers(stateRoot)
	if err != nil {
		return nil, err
	}
	var found *containerRecord
	if len(nameOrID) >= 4 {
		for _, c := range all {
			if strings.HasPrefix(c.ID, nameOrID) || strings.HasPrefix(c.SandboxID, nameOrID) {
				if found != nil {
					return nil, fmt.Errorf("%s: %w", clip.Quote(nameOrID), sandbox.ErrAmbiguousID)
				}
				found = c
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%s: %w", clip.Quote(nameOrID), errContainerNotFound)
	}
	return found, nil
}

// readExit reads the supervisor's exit record of container id.
func readExit(stateRoot, id string) (*sandbox.ExitStatus, error) {
	b, err := os.ReadFile(filepath.Join(containerDir(stateRoot, id), containerExit))
	if err != nil {
		return nil, err
	}
	var e sandbox.ExitStatus
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%s: %w", containerExit, err)
	}
	return &e, nil
}

// markStopped marks the container arg names, if it names one, as
// stopped by hand, so that its restart policy does not start it again.
func markStopped(stateRoot, arg string) {
	if c, err := loadContainer(stateRoot, arg); err == nil {
		updateContainer(stateRoot, c.ID, func(c *containerRecord) error {
			c.Stopped = true
			return nil
		})
	}
}

// sandboxRef is what commands that act on a live sandbox (kill, exec, cp,
// commit) pass to sandbox.Open for arg: the current sandbox of the
// container arg names, or else arg itself, a sandbox's name or ID.
func sandboxRef(stateRoot, arg string) string {
	if c, err := loadContainer(stateRoot, arg); err == nil && c.SandboxID != "" {
		return c.SandboxID
	}
	return arg
}
