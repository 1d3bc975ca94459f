package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

// ErrInvalidOptions means Options (or ExecOptions) ask for something that
// cannot be done or makes no sense; the message says which field and why.
// Nothing was made. It is also an ErrSetup (errors.Is says so): the
// workload never ran.
var ErrInvalidOptions error = invalidOptions{}

type invalidOptions struct{}

func (invalidOptions) Error() string        { return "invalid options" }
func (invalidOptions) Is(target error) bool { return target == ErrSetup }

// ErrSeccompCannotStart means a seccomp profile refuses a system call
// that starting the workload needs, so that no program could ever run
// under it. It comes with ErrInvalidOptions.
var ErrSeccompCannotStart = errors.New("the seccomp profile lets no program start")

// MinMemory is the smallest memory limit (Resources.MemoryMax) a sandbox
// takes. Below it the sandbox's own init, before any workload runs, is
// killed for lack of memory: it needs some 300 KiB on cgroup v1 (measured
// with a workload of /bin/true), and more where it is born in its cgroup
// (v2), which is then also charged for its new namespaces. 1 MiB leaves
// room for both; what the workload needs on top is the caller's to give.
const MinMemory = 1 << 20

// MinPids is the smallest tasks limit (Resources.PidsMax) a sandbox takes:
// its init and its workload.
const MinPids = 2

// maxHostname is the longest host name the kernel keeps (HOST_NAME_MAX).
const maxHostname = 64

// Validate reports the first thing in o that cannot work or makes no
// sense, as an error wrapping ErrInvalidOptions that names the field. It
// looks at the options alone, not at the image or the host (beyond its
// number of CPUs): Start calls it first, before anything is made, and
// also checks what needs the host. Callers may call it earlier to report
// mistakes sooner.
//
// Among what it refuses: strings with a NUL (the kernel would cut them),
// Env entries without a name, a relative Dir or mount destination, ".."
// in either; a Hostname, NetworkAliases or ExtraHosts name that is not a
// host name (they go into /etc/hosts, where a space or a newline would
// add entries); mounts on /, /proc, /sys, /dev or /dev/pts, or under
// /proc or /sys, but for bind mounts on the files lxcfs provides
// (/proc/meminfo and the like, as runc allows), and two mounts on one
// destination; negative Timeout, Grace and DiskQuota, or a DiskQuota below
// layerfs.MinDiskQuota; Rlimits the kernel does not know or would refuse;
// Resources the cgroup package refuses, MemoryMax below MinMemory,
// PidsMax below MinPids, more CPUs than the host has; Ports with no
// network to publish them on. Start also refuses mount destinations that
// the image's symbolic links lead to such places, sysctls the sandbox may
// not set, and seccomp profiles under which no program could start
// (ErrSeccompCannotStart).
func (o *Options) Validate() error {
	if err := o.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	return nil
}

func (o *Options) validate() error {
	if err := checkCommand(o.Entrypoint, o.Args); err != nil {
		return err
	}
	if err := checkProcess(nil, o.Env, o.Dir, o.User); err != nil {
		return err
	}
	if err := checkNameAndLabels(o); err != nil {
		return err
	}
	if o.Hostname != "" {
		if err := checkHostName(o.Hostname); err != nil {
			return fmt.Errorf("Hostname: %w", err)
		}
	}
	if err := checkMounts(o.Mounts); err != nil {
		return err
	}
	switch {
	case o.DiskQuota < 0:
		return fmt.Errorf("DiskQuota %d: a negative disk quota (0 means none)", o.DiskQuota)
	case o.DiskQuota > 0 && o.DiskQuota < layerfs.MinDiskQuota:
		return fmt.Errorf("DiskQuota %d: a disk quota below the minimum of %d bytes (1 MiB)", o.DiskQuota, layerfs.MinDiskQuota)
	case o.Timeout < 0:
		return fmt.Errorf("Timeout %v is negative (0 means none)", o.Timeout)
	case o.Grace < 0:
		return fmt.Errorf("Grace %v is negative (0 means SIGKILL at once)", o.Grace)
	}
	if err := checkRlimits("Rlimits", o.Rlimits); err != nil {
		return err
	}
	if o.Resources != nil {
		if err := checkResources(o.Resources); err != nil {
			return fmt.Errorf("Resources: %w", err)
		}
	}
	if o.Security != nil {
		if err := checkSecurity(o.Security); err != nil {
			return fmt.Errorf("Security: %w", err)
		}
	}
	if err := checkNetworkOptions(o); err != nil {
		return err
	}
	if o.StateDir != "" && !path.IsAbs(o.StateDir) {
		return fmt.Errorf("StateDir %q is not an absolute path", o.StateDir)
	}
	return nil
}

// validate checks s's options before anything is made for it, and the
// sysctls, which depend on its security configuration too. A pool's
// sandbox checks only what its own options may change: the pool checked
// the rest when it built its first. Every error wraps ErrInvalidOptions.
// (The seccomp filter is checked where it is compiled or found:
// startableProgram.)
func (s *Sandbox) validate() error {
	if err := s.checkDetachable(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if s.pool != nil {
		o := &s.opts
		if err := checkCommand(o.Entrypoint, o.Args); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		if err := checkProcess(nil, o.Env, o.Dir, o.User); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		if err := checkRlimits("Rlimits", o.Rlimits); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		if o.Timeout < 0 {
			return fmt.Errorf("%w: Timeout %v is negative (0 means none)", ErrInvalidOptions, o.Timeout)
		}
		if o.Grace < 0 {
			return fmt.Errorf("%w: Grace %v is negative (0 means SIGKILL at once)", ErrInvalidOptions, o.Grace)
		}
		if err := checkNameAndLabels(o); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		return nil
	}
	if err := s.opts.Validate(); err != nil {
		return err
	}
	if _, err := s.sysctls(s.security(&s.opts)); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	return nil
}

// validate is Options.Validate for a process that Exec adds.
func (o *ExecOptions) validate() error {
	if len(o.Args) == 0 {
		return fmt.Errorf("%w: Args: no command", ErrInvalidOptions)
	}
	if err := checkProcess(o.Args, o.Env, o.Dir, o.User); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if o.TTY && o.HandOverStdio {
		return fmt.Errorf("%w: TTY with HandOverStdio: the terminal is the process's standard streams", ErrInvalidOptions)
	}
	if o.Resize != nil && !o.TTY {
		return fmt.Errorf("%w: Resize without TTY", ErrInvalidOptions)
	}
	return nil
}

// checkProcess checks what describes a process: its command, environment,
// working directory and user. The kernel takes strings up to a NUL, so a
// NUL inside one would silently cut it.
func checkProcess(args, env []string, dir, user string) error {
	if len(args) > 0 && args[0] == "" {
		return errors.New("Args[0] is empty: no program to run")
	}
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("Args[%d] %s contains a NUL byte", i, quoteShort(a))
		}
	}
	for i, kv := range env {
		name, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return fmt.Errorf("Env[%d] %s is not NAME=VALUE", i, quoteShort(kv))
		case name == "":
			return fmt.Errorf("Env[%d] %s has an empty name", i, quoteShort(kv))
		case strings.IndexByte(kv, 0) >= 0:
			return fmt.Errorf("Env[%d] %s contains a NUL byte", i, quoteShort(name))
		}
	}
	if dir != "" {
		if err := checkPath(dir); err != nil {
			return fmt.Errorf("Dir: %w", err)
		}
	}
	if user != "" {
		name, group, hasGroup := strings.Cut(user, ":")
		switch {
		case strings.IndexByte(user, 0) >= 0:
			return fmt.Errorf("User %s contains a NUL byte", quoteShort(user))
		case name == "" || hasGroup && group == "":
			return fmt.Errorf("User %s: want user[:group], by name or number", quoteShort(user))
		case strings.Contains(group, ":"):
			return fmt.Errorf("User %s: want user[:group], by name or number (one colon)", quoteShort(user))
		}
	}
	return nil
}

// checkPath checks a path inside the sandbox: absolute, with no NUL and
// no "..", which would leave whatever it names to depend on the links on
// the way.
func checkPath(p string) error {
	switch {
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("%s contains a NUL byte", quoteShort(p))
	case !path.IsAbs(p):
		return fmt.Errorf("%s is not an absolute path", quoteShort(p))
	}
	for part := range strings.SplitSeq(p, "/") {
		if part == ".." {
			return fmt.Errorf("%s contains \"..\"", quoteShort(p))
		}
	}
	return nil
}

// checkHostName checks a name that goes into the sandbox's /etc/hosts, and
// those of the sandboxes on its network: the letters, digits, '-', '.' and
// '_' of host names, and what the kernel keeps. Anything else, a space or
// a newline above all, would add entries of its own.
func checkHostName(name string) error {
	if len(name) > maxHostname {
		return fmt.Errorf("%s is longer than %d bytes", quoteShort(name), maxHostname)
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("%s: a host name has only letters, digits, '-', '.' and '_'", quoteShort(name))
		}
	}
	if name[0] == '-' || name[0] == '.' {
		return fmt.Errorf("%s: a host name starts with a letter or digit", quoteShort(name))
	}
	return nil
}

// procMountable are the files under /proc that a bind mount may replace:
// those lxcfs provides, to show a sandbox its own limits (runc allows the
// same few). Any other mount under /proc, or on it, could hide what berth
// masks there or replace the sandbox's view of its processes.
var procMountable = []string{
	"/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
	"/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
	"/proc/sys/kernel/ns_last_pid", "/proc/sys/crypto/fips_enabled",
}

// checkMounts checks each mount on its own and that no two share a
// destination, which would leave the first hidden.
func checkMounts(mounts []Mount) error {
	seen := make(map[string]int, len(mounts))
	for i := range mounts {
		m := &mounts[i]
		if err := checkMount(m); err != nil {
			return fmt.Errorf("Mounts[%d]: %w", i, err)
		}
		dst := path.Clean(m.Destination)
		if j, ok := seen[dst]; ok {
			return fmt.Errorf("Mounts[%d] and Mounts[%d] are both mounted at %s", j, i, dst)
		}
		seen[dst] = i
	}
	return nil
}

func checkMount(m *Mount) error {
	if err := checkPath(m.Destination); err != nil {
		return fmt.Errorf("destination %w", err)
	}
	if err := checkDestination(path.Clean(m.Destination), m.Type); err != nil {
		return fmt.Errorf("destination %w", err)
	}
	switch m.Type {
	case "", "bind":
		if !path.IsAbs(m.Source) {
			return fmt.Errorf("bind mount source %s is not an absolute path", quoteShort(m.Source))
		}
		if strings.IndexByte(m.Source, 0) >= 0 {
			return fmt.Errorf("bind mount source %s contains a NUL byte", quoteShort(m.Source))
		}
	case "volume":
		if m.Source == "" || strings.ContainsAny(m.Source, "/\x00") || m.Source == "." || m.Source == ".." {
			return fmt.Errorf("volume name %s: want a name, not a path", quoteShort(m.Source))
		}
	case "tmpfs":
		if strings.IndexByte(m.Options, 0) >= 0 {
			return errors.New("tmpfs options contain a NUL byte")
		}
		return nil
	default:
		return fmt.Errorf("unknown type %s (want bind, volume or tmpfs)", quoteShort(m.Type))
	}
	if _, err := bindFlags(m); err != nil {
		return err
	}
	return nil
}

// rlimNLimits is the number of resources setrlimit(2) knows (RLIM_NLIMITS),
// unix.RLIMIT_CPU (0) to unix.RLIMIT_RTTIME (15).
const rlimNLimits = unix.RLIMIT_RTTIME + 1

// checkDestination refuses dst, a clean absolute path in the sandbox, as
// where a mount of type typ would go: the root, the sandbox's own /proc,
// /sys, /dev and /dev/pts, and anything under /sys or /proc but the files
// lxcfs provides.
func checkDestination(dst, typ string) error {
	under := func(dir string) bool { return dst == dir || strings.HasPrefix(dst, dir+"/") }
	switch {
	case dst == "/":
		return errors.New("/: the image is the root; use ReadonlyRootfs or another directory")
	case dst == "/proc" || dst == "/sys" || dst == "/dev" || dst == "/dev/pts":
		return fmt.Errorf("%s: the sandbox's own %s goes there", dst, dst)
	case under("/sys"):
		return fmt.Errorf("%s is under /sys, which is the kernel's, read-only", dst)
	case under("/proc") && (typ == "tmpfs" || !slices.Contains(procMountable, dst)):
		return fmt.Errorf("%s is under /proc, where only a bind mount on a file lxcfs provides (/proc/meminfo, /proc/uptime...) may go", dst)
	}
	return nil
}

// checkMountTargets refuses a mount whose destination leads, through
// symbolic links of the image, to a place checkDestination refuses by
// name: a link /data -> /proc in an image would otherwise put a caller's
// -v dir:/data over the sandbox's /proc. The init resolves destinations
// inside the rootfs (open at root) as this does, and creates what does
// not exist yet. It returns the destinations as mountDestinations does.
func checkMountTargets(root int, mounts []Mount) ([]string, error) {
	var out []string
	for i, m := range mounts {
		dst := path.Clean(m.Destination)
		real, err := resolveInRoot(root, dst)
		if err != nil {
			return nil, fmt.Errorf("%w: Mounts[%d]: destination %s: %w", ErrInvalidOptions, i, dst, err)
		}
		out = append(out, dst)
		if real == dst {
			continue // checked by name
		}
		if err := checkDestination(real, m.Type); err != nil {
			return nil, fmt.Errorf("%w: Mounts[%d]: destination %s leads, through the image's symbolic links, to %w", ErrInvalidOptions, i, dst, err)
		}
		out = append(out, real)
	}
	return out, nil
}

// maxLinks is how many symbolic links resolveInRoot follows in one path,
// as the kernel's MAXSYMLINKS.
const maxLinks = 40

// resolveInRoot returns the path that p, absolute, names inside the
// directory root once the symbolic links on it are followed as
// openat2(RESOLVE_IN_ROOT) follows them: an absolute link from root, ".."
// at root staying there. Links are followed even where their target does
// not exist (yet); from the first missing component on, the rest is taken
// as it is.
func resolveInRoot(root int, p string) (string, error) {
	cur, rest, links := "/", strings.Split(p, "/"), 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur) // cur has no links: ".." is lexical
			continue
		}
		next := path.Join(cur, c)
		// next is opened, not looked up by name from root: a name is
		// resolved by the kernel, which would follow a link the
		// workload put on cur since it was checked out of root, to the
		// host's files. Inside root, and through no link but next
		// itself, which O_PATH|O_NOFOLLOW opens as the link.
		fd, err := unix.Openat2(root, next[1:], &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS,
		})
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return path.Join(append([]string{next}, rest...)...), nil
		}
		if err != nil {
			return "", err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return "", err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			unix.Close(fd)
			cur = next
			continue
		}
		if links++; links > maxLinks {
			unix.Close(fd)
			return "", fmt.Errorf("more than %d symbolic links: %w", maxLinks, unix.ELOOP)
		}
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(fd, "", buf)
		unix.Close(fd)
		if err != nil {
			return "", err
		}
		target := string(buf[:n])
		if path.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return cur, nil
}

// checkRlimits checks resource limits as setrlimit(2) would, and that none
// is given twice, where one would silently win.
func checkRlimits(field string, rlimits []Rlimit) error {
	var seen [rlimNLimits]bool
	for i, r := range rlimits {
		switch {
		case r.Resource < 0 || r.Resource >= rlimNLimits:
			return fmt.Errorf("%s[%d]: no resource %d (want 0 to %d, unix.RLIMIT_*)", field, i, r.Resource, rlimNLimits-1)
		case r.Soft > r.Hard:
			return fmt.Errorf("%s[%d]: soft limit %d is above the hard limit %d", field, i, r.Soft, r.Hard)
		case seen[r.Resource]:
			return fmt.Errorf("%s[%d]: resource %d is limited twice", field, i, r.Resource)
		}
		seen[r.Resource] = true
	}
	return nil
}

// checkResources checks cgroup limits as the cgroup package does, and
// against what a sandbox needs and what the host has.
func checkResources(r *cgroup.Resources) error {
	if err := r.Validate(); err != nil {
		return err
	}
	switch {
	case r.MemoryMax > 0 && r.MemoryMax < MinMemory:
		return fmt.Errorf("MemoryMax %d is too small: a sandbox needs at least %d bytes (1 MiB) to start", r.MemoryMax, MinMemory)
	case r.PidsMax > 0 && r.PidsMax < MinPids:
		return fmt.Errorf("PidsMax %d is too small: a sandbox needs at least %d tasks (its init and the workload)", r.PidsMax, MinPids)
	}
	if r.CPUQuota > 0 {
		period := r.CPUPeriod
		if period == 0 {
			period = 100 * time.Millisecond
		}
		cpus, n := float64(r.CPUQuota)/float64(period), runtime.NumCPU()
		if cpus > float64(n) {
			return fmt.Errorf("CPUQuota %v per CPUPeriod %v is %.2f CPUs, and the host has %d", r.CPUQuota, period, cpus, n)
		}
	}
	return nil
}

// checkSecurity checks what a security configuration gives a sandbox by
// default.
func checkSecurity(c *security.Config) error {
	switch {
	case c.MemoryMax < 0:
		return fmt.Errorf("MemoryMax %d is negative (0 means no default)", c.MemoryMax)
	case c.MemoryMax > 0 && c.MemoryMax < MinMemory:
		return fmt.Errorf("MemoryMax %d is too small: a sandbox needs at least %d bytes (1 MiB) to start", c.MemoryMax, MinMemory)
	case c.PidsMax < 0:
		return fmt.Errorf("PidsMax %d is negative (0 means no default)", c.PidsMax)
	case c.PidsMax > 0 && c.PidsMax < MinPids:
		return fmt.Errorf("PidsMax %d is too small: a sandbox needs at least %d tasks (its init and the workload)", c.PidsMax, MinPids)
	}
	if _, err := security.CapabilityMask(c.Capabilities); err != nil {
		return fmt.Errorf("Capabilities: %w", err)
	}
	if u := c.UserNamespace; u != nil {
		if err := checkIDMaps("UIDMap", u.UIDMap); err != nil {
			return fmt.Errorf("UserNamespace.%w", err)
		}
		if err := checkIDMaps("GIDMap", u.GIDMap); err != nil {
			return fmt.Errorf("UserNamespace.%w", err)
		}
	}
	rl := make([]Rlimit, len(c.Rlimits))
	for i, r := range c.Rlimits {
		rl[i] = Rlimit{Resource: r.Resource, Soft: r.Soft, Hard: r.Hard}
	}
	return checkRlimits("Rlimits", rl)
}

// maxIDMaps is the most lines the kernel takes in a uid_map or gid_map.
const maxIDMaps = 340

// checkIDMaps checks a user namespace's id mappings as the kernel would
// when writing them, which refuses them all with a bare EINVAL: none
// empty, none running past the last id, no two overlapping inside or
// outside.
func checkIDMaps(field string, maps []security.IDMap) error {
	switch {
	case len(maps) == 0:
		return fmt.Errorf("%s: no mapping (root inside must map to some id outside)", field)
	case len(maps) > maxIDMaps:
		return fmt.Errorf("%s: %d mappings, more than the kernel's %d", field, len(maps), maxIDMaps)
	}
	overlap := func(a, b uint32, n, m uint32) bool {
		return uint64(a) < uint64(b)+uint64(m) && uint64(b) < uint64(a)+uint64(n)
	}
	for i, m := range maps {
		switch {
		case m.Size == 0:
			return fmt.Errorf("%s[%d]: size 0", field, i)
		case uint64(m.ContainerID)+uint64(m.Size) >= 1<<32 || uint64(m.HostID)+uint64(m.Size) >= 1<<32:
			return fmt.Errorf("%s[%d]: the range runs past id %d", field, i, uint32(1<<32-2))
		}
		for j, o := range maps[:i] {
			if overlap(m.ContainerID, o.ContainerID, m.Size, o.Size) || overlap(m.HostID, o.HostID, m.Size, o.Size) {
				return fmt.Errorf("%s[%d] overlaps %s[%d]", field, i, field, j)
			}
		}
	}
	return nil
}

// checkNetworkOptions checks the network options against each other, and
// the names and resolver settings that go into the sandbox's /etc files.
func checkNetworkOptions(o *Options) error {
	switch {
	case o.NetworkPool != nil && (o.JoinNetwork != "" || o.Network != nil || len(o.Ports) > 0):
		return errors.New("NetworkPool hands the sandbox its network: Network, Ports and JoinNetwork must be unset")
	case o.JoinNetwork != "" && (o.Network != nil || len(o.Ports) > 0):
		return errors.New("JoinNetwork shares a network namespace that has its network already: Network and Ports must be unset")
	case o.JoinNetwork != "" && !path.IsAbs(o.JoinNetwork):
		return fmt.Errorf("JoinNetwork %s is not an absolute path", quoteShort(o.JoinNetwork))
	}
	if len(o.Ports) > 0 && o.NetworkPool == nil && o.JoinNetwork == "" {
		switch n := o.Network; {
		case n == nil || n == netplug.None():
			return errors.New("Ports need a network to publish them on (a bridge); the sandbox has none but its loopback")
		case netplug.IsHost(n):
			return errors.New("Ports: the sandbox shares the host's network, where its ports are the host's already")
		}
	}
	for i, p := range o.Ports {
		if err := checkPort(p); err != nil {
			return fmt.Errorf("Ports[%d]: %w", i, err)
		}
	}
	for i, a := range o.NetworkAliases {
		if err := checkHostName(a); err != nil {
			return fmt.Errorf("NetworkAliases[%d]: %w", i, err)
		}
	}
	for i, h := range o.ExtraHosts {
		if !h.IP.IsValid() {
			return fmt.Errorf("ExtraHosts[%d]: no address", i)
		}
		if len(h.Names) == 0 {
			return fmt.Errorf("ExtraHosts[%d]: no name for %s", i, h.IP)
		}
		for _, n := range h.Names {
			if n == "" {
				return fmt.Errorf("ExtraHosts[%d]: an empty name for %s", i, h.IP)
			}
			if err := checkHostName(n); err != nil {
				return fmt.Errorf("ExtraHosts[%d]: %w", i, err)
			}
		}
	}
	if d := o.DNS; d != nil {
		for i, ns := range d.Nameservers {
			if !ns.IsValid() {
				return fmt.Errorf("DNS.Nameservers[%d]: no address", i)
			}
		}
		for i, s := range d.Search {
			if err := checkResolvWord(s); err != nil {
				return fmt.Errorf("DNS.Search[%d]: %w", i, err)
			}
		}
		for i, s := range d.Options {
			if err := checkResolvWord(s); err != nil {
				return fmt.Errorf("DNS.Options[%d]: %w", i, err)
			}
		}
	}
	return nil
}

// checkResolvWord checks a word of resolv.conf: one word, printable, which
// cannot start a line of its own.
func checkResolvWord(w string) error {
	if w == "" {
		return errors.New("empty")
	}
	for _, c := range []byte(w) {
		if c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%s: want one word of printable ASCII", quoteShort(w))
		}
	}
	return nil
}

// checkPort checks a published port as the networks will, so that a
// mistake is reported before anything is made.
func checkPort(p netplug.PortMapping) error {
	switch proto := strings.ToLower(p.Protocol); {
	case p.ContainerPort == 0:
		return errors.New("no container port")
	case proto != "" && proto != "tcp" && proto != "udp":
		return fmt.Errorf("protocol %s (want tcp or udp)", quoteShort(p.Protocol))
	}
	if p.HostIP != "" {
		if _, err := netip.ParseAddr(p.HostIP); err != nil {
			return fmt.Errorf("host address %s is not an IP address", quoteShort(p.HostIP))
		}
	}
	return nil
}

// checkSeccompStart reports a seccomp program that refuses a system call
// the workload's process makes after loading it, up to its exec: under
// such a filter no program can ever start, and the process would die, or
// fail, without a word.
func checkSeccompStart(prog []byte, sec *security.Config) error {
	calls := nsinit.ExecSyscalls(sec.NoNewPrivileges)
	for _, c := range calls {
		ok, err := security.Allows(prog, []security.Syscall{c})
		if err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
		if !ok {
			return fmt.Errorf("%w: Security.Seccomp: %w: it refuses %s, which starting the workload needs",
				ErrInvalidOptions, ErrSeccompCannotStart, security.SyscallName(c.Nr))
		}
	}
	return nil
}

// quoteShort quotes s for an error message, cut to its first 64 bytes:
// a mistaken value may be kilobytes long.
func quoteShort(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
}
