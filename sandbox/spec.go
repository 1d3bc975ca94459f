package sandbox

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

// seccompPrograms remembers compiled seccomp programs across sandboxes.
// It holds no state that matters: the same profile and capabilities always
// compile to the same program; it only saves libseccomp's 14 ms per start.
var seccompPrograms security.SeccompCache

// defaultPath is the PATH a workload gets when its image sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// buildSpec turns the image config and the options into what the init
// needs: the sandbox's part and its workload's.
func (s *Sandbox) buildSpec(rootfs, stateDir string, sec *security.Config) (*nsinit.Spec, error) {
	plan, err := s.lsmPlan(sec)
	if err != nil {
		return nil, err
	}
	spec, err := s.workloadSpec(rootfs, sec, plan)
	if err != nil {
		return nil, err
	}
	if err := s.sandboxSpec(spec, rootfs, stateDir, sec, plan); err != nil {
		return nil, err
	}
	return spec, nil
}

// hostname is the sandbox's: the one asked for, or the start of its ID.
func (s *Sandbox) hostname() string {
	if s.opts.Hostname != "" {
		return s.opts.Hostname
	}
	return s.id[:12]
}

// lsmPlan is lsmPlan for the sandbox, its warnings logged.
func (s *Sandbox) lsmPlan(sec *security.Config) (*security.LSMPlan, error) {
	plan, err := lsmPlan(sec)
	if err != nil {
		return nil, err
	}
	if plan != nil {
		for _, w := range plan.Warnings {
			s.log.Warn("security label skipped", "id", s.id, "why", w)
		}
	}
	return plan, nil
}

// workloadSpec is the workload's part of the spec: its process, and the
// descriptors and terminal it gets.
func (s *Sandbox) workloadSpec(rootfs string, sec *security.Config, plan *security.LSMPlan) (*nsinit.Spec, error) {
	var cache *specCache
	if s.pool != nil {
		cache = &s.pool.cache
	}
	// The record has it already, but for a pool's sandbox, whose
	// request's command is known only now.
	args := s.state.Command
	if args == nil {
		var err error
		if args, err = command(&s.opts, s.img.Config.Config.Entrypoint, s.img.Config.Config.Cmd); err != nil {
			return nil, err
		}
	}
	spec, err := s.processSpec(&s.opts, args, rootfs, sec, plan, cache)
	if err != nil {
		return nil, err
	}
	spec.Env = setDefaultEnv(spec.Env, "HOSTNAME", s.hostname())
	spec.ExtraFiles = len(s.opts.ExtraFiles)
	spec.TTY = s.opts.TTY
	return spec, nil
}

// sandboxSpec fills in the sandbox's part of spec: root, mounts, hostname,
// network; everything that comes before a workload.
func (s *Sandbox) sandboxSpec(spec *nsinit.Spec, rootfs, stateDir string, sec *security.Config, plan *security.LSMPlan) error {
	spec.Rootfs = rootfs
	spec.Hostname = s.hostname()
	// The host's loopback is the host's business, and a joined
	// namespace's is its owner's.
	spec.Loopback = !s.hostNetwork() && s.netns == nil
	if s.netns != nil {
		// The init's descriptor: after the console slot and the
		// workload's extra files.
		spec.NetnsFD = 6 + spec.ExtraFiles
	}
	spec.UnshareCgroup = true
	spec.ReadonlyRoot = s.opts.ReadonlyRootfs || sec.ReadonlyRootfs
	// No mknod in a user namespace: device nodes are bound from the
	// host's /dev instead.
	spec.BindDevices = sec.UserNamespace != nil
	spec.Devices = deviceSpecs(s.devices, spec.BindDevices)
	spec.Masked = sec.MaskedPaths
	spec.ReadonlyPaths = sec.ReadonlyPaths
	sysctls, err := s.sysctls(sec)
	if err != nil {
		return err
	}
	spec.Sysctls = sysctls

	if s.resets == 0 {
		// A Reset keeps the files, as netplug maintains them.
		if err := mountEtcFS(stateDir, plan.MountData("")); err != nil {
			return err
		}
		if err := s.writeEtcFiles(stateDir, spec.Hostname); err != nil {
			return err
		}
	}
	// The bind mounts' sources follow the init's other descriptors (see
	// launchInit).
	firstFD := 6 + spec.ExtraFiles
	if s.netns != nil {
		firstFD++
	}
	// One descriptor, and one resolution of each destination, serve the
	// checks of the caller's mounts and the placing of the etc files.
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: rootfs, Err: err}
	}
	defer unix.Close(root)
	late, err := checkMountTargets(root, s.opts.Mounts)
	if err != nil {
		return err
	}
	user, err := s.userMounts(s.opts.Mounts, firstFD)
	if err != nil {
		return err
	}
	if sec.ReadonlyRootfs && !mountsAt(s.opts.Mounts, "/tmp") {
		user = append(user, nsinit.Mount{Kind: nsinit.MountFS, Source: "tmpfs", Target: "/tmp", FSType: "tmpfs",
			Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: plan.MountData("mode=1777,size=65536k")})
		late = appendDestination(late, root, "/tmp")
	}
	base := baseMounts(plan)
	etc, err := s.etcMounts(stateDir, root, mountDestinations(root, base), late)
	if err != nil {
		return err
	}
	spec.Mounts = append(append(base, etc...), user...)
	return nil
}

// lsmPlan works out the SELinux and AppArmor labels to apply, looking at
// the host only when some label is asked for.
func lsmPlan(sec *security.Config) (*security.LSMPlan, error) {
	if sec.LSM == (security.LSMOptions{}) {
		return nil, nil
	}
	plan, err := security.PlanLSM(sec.LSM, security.DetectHostLSM())
	if err != nil {
		return nil, err
	}
	return plan, nil
}

func mountsAt(mounts []Mount, dst string) bool {
	for _, m := range mounts {
		if path.Clean(m.Destination) == dst {
			return true
		}
	}
	return false
}

func (s *Sandbox) security(o *Options) *security.Config {
	if o.Security != nil {
		return o.Security
	}
	return defaultSecurity()
}

// defaultSecurity is the configuration of sandboxes whose options give
// none. It is shared and never changed, so its seccomp program can be
// compiled once and found without hashing the profile on every start.
var defaultSecurity = sync.OnceValue(security.Default)

// seccompProgram returns sec's seccomp program for caps. Compiled
// programs are also kept in files under stateRoot, so that a process that
// runs one sandbox and exits, as the berth command does, need not compile
// the same profile every time (libseccomp takes some 14 ms).
func seccompProgram(stateRoot string, sec *security.Config, caps uint64) ([]byte, error) {
	dir := filepath.Join(stateRoot, "seccomp")
	if sec == defaultSecurity() {
		if p, ok := defaultPrograms.Load(caps); ok {
			return p.([]byte), nil
		}
		p, err := startableProgram(dir, sec, caps)
		if err == nil {
			defaultPrograms.Store(caps, p)
		}
		return p, err
	}
	return startableProgram(dir, sec, caps)
}

// startableProgram returns sec's seccomp program for caps, kept in dir,
// once it is known to let the workload start (checkSeccompStart).
func startableProgram(dir string, sec *security.Config, caps uint64) ([]byte, error) {
	p, err := seccompPrograms.ProgramIn(dir, sec.Seccomp, caps)
	if err != nil {
		return nil, err
	}
	if err := checkSeccompStart(p, sec); err != nil {
		return nil, err
	}
	return p, nil
}

// defaultPrograms holds defaultSecurity's programs by capability set (a
// root and a non-root workload differ).
var defaultPrograms sync.Map

// specCache keeps what a pool's sandboxes would otherwise each work out
// again: users looked up in the image (every sandbox's rootfs is the same
// unused copy of it when the lookup is made) and seccomp programs of the
// pool's one security configuration.
type specCache struct {
	users    sync.Map // user spec → user
	programs sync.Map // capability mask → []byte
}

func (c *specCache) user(rootfs, spec string) (user, error) {
	if c == nil {
		return resolveUser(rootfs, spec)
	}
	if u, ok := c.users.Load(spec); ok {
		return u.(user), nil
	}
	u, err := resolveUser(rootfs, spec)
	if err == nil {
		c.users.Store(spec, u)
	}
	return u, err
}

func (c *specCache) program(stateRoot string, sec *security.Config, caps uint64) ([]byte, error) {
	if c == nil {
		return seccompProgram(stateRoot, sec, caps)
	}
	if p, ok := c.programs.Load(caps); ok {
		return p.([]byte), nil
	}
	p, err := seccompProgram(stateRoot, sec, caps)
	if err == nil {
		c.programs.Store(caps, p)
	}
	return p, err
}

// processSpec describes one process of the sandbox, its workload or one
// that Exec adds, that runs args: environment, directory, user, and the
// privileges sec and plan leave it. cache, if not nil, is the pool's whose
// sandbox starts (never Exec's, which must see the image as the workload
// has left it).
func (s *Sandbox) processSpec(o *Options, args []string, rootfs string, sec *security.Config, plan *security.LSMPlan, cache *specCache) (*nsinit.Spec, error) {
	cfg := s.img.Config.Config
	spec := &nsinit.Spec{Args: args}

	spec.Dir = o.Dir
	if spec.Dir == "" {
		spec.Dir = cfg.WorkingDir
	}
	if spec.Dir == "" {
		spec.Dir = "/"
	}
	if !path.IsAbs(spec.Dir) {
		return nil, fmt.Errorf("working directory %q is not absolute", spec.Dir)
	}
	// Docker creates a missing working directory; so do we.
	if err := mkdirInRoot(rootfs, spec.Dir); err != nil {
		return nil, fmt.Errorf("working directory %s: %w", spec.Dir, err)
	}

	userSpec := o.User
	if userSpec == "" {
		userSpec = cfg.User
	}
	u, err := cache.user(rootfs, userSpec)
	if err != nil {
		return nil, err
	}
	spec.UID, spec.GID, spec.Groups = u.uid, u.gid, u.groups

	env := mergeEnv(cfg.Env, o.Env)
	env = setDefaultEnv(env, "PATH", defaultPath)
	env = setDefaultEnv(env, "HOME", u.home)
	spec.Env = env
	spec.Path = lookupEnv(env, "PATH")

	caps, err := security.CapabilityMask(sec.Capabilities)
	if err != nil {
		return nil, err
	}
	spec.Caps = &nsinit.Caps{Bounding: caps, Effective: caps, Permitted: caps}
	if u.uid != 0 {
		// A non-root user starts with no effective capabilities, as
		// after an exec without file capabilities.
		spec.Caps.Effective, spec.Caps.Permitted = 0, 0
	}
	spec.NoNewPrivs = sec.NoNewPrivileges
	if sec.Seccomp != nil {
		if spec.Seccomp, err = cache.program(s.stateRoot(), sec, caps); err != nil {
			return nil, err
		}
		spec.SeccompFlags = sec.Seccomp.FilterFlags()
	}
	if plan != nil {
		for _, w := range plan.ExecWrites {
			spec.ExecWrites = append(spec.ExecWrites, nsinit.FileWrite{Path: w.Path, Data: w.Data})
		}
	}
	if sec.Landlock {
		spec.Landlock = security.LandlockFSAccess()
	}
	for _, r := range sec.Rlimits {
		if !slices.ContainsFunc(o.Rlimits, func(x Rlimit) bool { return x.Resource == r.Resource }) {
			spec.Rlimits = append(spec.Rlimits, nsinit.Rlimit{Resource: r.Resource, Soft: r.Soft, Hard: r.Hard})
		}
	}
	for _, r := range o.Rlimits {
		spec.Rlimits = append(spec.Rlimits, nsinit.Rlimit{Resource: r.Resource, Soft: r.Soft, Hard: r.Hard})
	}
	return spec, nil
}

// baseMounts are the filesystems every sandbox has; its own ones carry
// the SELinux mount label, if there is one.
func baseMounts(plan *security.LSMPlan) []nsinit.Mount {
	const nosuidNodevNoexec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	return []nsinit.Mount{
		{Kind: nsinit.MountFS, Source: "proc", Target: "/proc", FSType: "proc", Flags: nosuidNodevNoexec},
		{Kind: nsinit.MountDev, Source: "tmpfs", Target: "/dev", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: plan.MountData("mode=755,size=65536k")},
		{Kind: nsinit.MountFS, Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: plan.MountData("newinstance,ptmxmode=0666,mode=0620")},
		{Kind: nsinit.MountFS, Source: "shm", Target: "/dev/shm", FSType: "tmpfs", Flags: nosuidNodevNoexec, Data: plan.MountData("mode=1777,size=65536k")},
		{Kind: nsinit.MountFS, Source: "mqueue", Target: "/dev/mqueue", FSType: "mqueue", Flags: nosuidNodevNoexec, Data: plan.MountData("")},
		{Kind: nsinit.MountFS, Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: nosuidNodevNoexec | unix.MS_RDONLY},
	}
}

// volumeStorage is storage that also keeps named volumes, as
// *layerfs.Store does. The directory holding a volume's is trusted as it
// is (see openVolumeSource).
type volumeStorage interface {
	Volume(ctx context.Context, name string) (string, error)
}

// userMounts turns the caller's mounts into the init's. The source of each
// bind mount and volume is opened here (openSource), and goes to the init
// as a descriptor, from firstFD on, in s.mountSources.
func (s *Sandbox) userMounts(mounts []Mount, firstFD int) ([]nsinit.Mount, error) {
	var out []nsinit.Mount
	for _, m := range mounts {
		if !path.IsAbs(m.Destination) {
			return nil, fmt.Errorf("mount destination %q is not absolute", m.Destination)
		}
		switch m.Type {
		case "bind", "", "volume":
			flags, err := bindFlags(&m)
			if err != nil {
				return nil, err
			}
			src, err := s.openSource(&m)
			if err != nil {
				return nil, err
			}
			if s.mountSources == nil && s.resets == 0 {
				// Once: a Reset opens them again, and the step
				// closes whatever is open when it runs.
				s.undo = append(s.undo, func() error { s.closeMountSources(); return nil })
			}
			s.mountSources = append(s.mountSources, src)
			out = append(out, nsinit.Mount{Kind: nsinit.MountBind, Source: m.Source, Target: m.Destination, Flags: flags,
				SourceFD: firstFD + len(s.mountSources) - 1})
		case "tmpfs":
			flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
			if m.ReadOnly {
				flags |= unix.MS_RDONLY
			}
			out = append(out, nsinit.Mount{Kind: nsinit.MountFS, Source: "tmpfs", Target: m.Destination, FSType: "tmpfs", Flags: flags, Data: m.Options})
		default:
			return nil, fmt.Errorf("mount %s: unknown type %q (want bind, volume or tmpfs)", m.Destination, m.Type)
		}
	}
	return out, nil
}

// openSource opens the source of a bind mount or volume m for its init,
// setting m.Source to a volume's directory.
func (s *Sandbox) openSource(m *Mount) (*os.File, error) {
	if m.Type == "volume" {
		vs, ok := s.storage.(volumeStorage)
		if !ok {
			return nil, fmt.Errorf("mount %s: the storage keeps no volumes", m.Destination)
		}
		dir, err := vs.Volume(context.Background(), m.Source)
		if err != nil {
			return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		f, err := openVolumeSource(dir)
		if err != nil {
			return nil, fmt.Errorf("mount %s: volume: %w", m.Destination, err)
		}
		// The init may look the directory up again by its path, without
		// following links (to keep submounts locked, see nsinit's
		// clone_locked): give it the path with the trusted links of the
		// storage's own resolved.
		m.Source = dir
		if parent, err := filepath.EvalSymlinks(filepath.Dir(dir)); err == nil {
			m.Source = filepath.Join(parent, filepath.Base(dir))
		}
		return f, nil
	}
	if !filepath.IsAbs(m.Source) {
		return nil, fmt.Errorf("bind mount source %q is not absolute", m.Source)
	}
	f, err := openBindSource(m.Source)
	if err != nil {
		return nil, fmt.Errorf("bind mount source: %w", err)
	}
	return f, nil
}

// writeEtcFiles writes the sandbox's /etc/hosts, /etc/hostname and
// /etc/resolv.conf into their filesystem (mountEtcFS), from which the init
// binds them over the image's.
func (s *Sandbox) writeEtcFiles(stateDir, hostname string) error {
	// Without a network there is no resolver to name; a network's Attach
	// rewrites hosts and resolv.conf. A pooled namespace was attached
	// before the sandbox existed, so its files are written here.
	a, resolv := &netplug.Attachment{Hosts: s.opts.ExtraHosts}, ""
	if p := s.attachment; p != nil {
		a.Network, a.IPs, resolv = p.Network, p.IPs, string(p.DNS.ResolvConf())
	}
	files := map[string]string{
		"hostname":    hostname + "\n",
		"hosts":       string(netplug.HostsFile(a, hostname)),
		"resolv.conf": resolv,
	}
	for name, content := range files {
		if err := os.WriteFile(etcFile(stateDir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func envKey(kv string) string {
	k, _, _ := strings.Cut(kv, "=")
	return k
}

// mergeEnv returns base with each of over's variables added or replacing
// the one of the same name, keeping base's order.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range over {
		k := envKey(kv)
		replaced := false
		for i, old := range out {
			if envKey(old) == k {
				out[i], replaced = kv, true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

func lookupEnv(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

func setDefaultEnv(env []string, key, value string) []string {
	for _, kv := range env {
		if envKey(kv) == key {
			return env
		}
	}
	return append(env, key+"="+value)
}
