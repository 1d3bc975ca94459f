package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// processFlags are the flags `berth run` and `berth exec` share.
type processFlags struct {
	env, envFiles []string
	dir, user     string
	interactive   bool
}

func (f *processFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable (KEY=VALUE, or KEY to pass the host's)")
	cmd.Flags().StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from a file: KEY=VALUE lines, KEY alone to pass the host's, # comments (-e wins over it)")
	cmd.Flags().StringVarP(&f.dir, "workdir", "w", "", "working directory inside the sandbox")
	cmd.Flags().StringVarP(&f.user, "user", "u", "", "user[:group], by name or number")
	cmd.Flags().BoolVarP(&f.interactive, "interactive", "i", false, "pass standard input to the sandbox")
}

// environment returns the variables --env-file and -e set, the files'
// first, so that -e's win: KEY=VALUE, or KEY for the host's value of KEY
// (left out if the host has none, as Docker does).
func (f *processFlags) environment() ([]string, error) {
	out, err := readEnvFiles(f.envFiles)
	if err != nil {
		return nil, err
	}
	for _, e := range f.env {
		name, _, hasValue := strings.Cut(e, "=")
		if name == "" {
			return nil, invalidFlag("-e %s: want KEY=VALUE or KEY, with a KEY", clip.Quote(e))
		}
		if !hasValue {
			v, ok := os.LookupEnv(e)
			if !ok {
				continue
			}
			e += "=" + v
		}
		out = append(out, e)
	}
	return out, nil
}

func (f *processFlags) stdin(cmd *cobra.Command) io.Reader {
	if f.interactive {
		return cmd.InOrStdin()
	}
	return nil
}

func newRunCommand(g *globals) *cobra.Command {
	var (
		pf                     processFlags
		wf                     workloadFlags
		df                     detachFlags
		rf                     waitFlags
		sf                     securityFlags
		nf                     networkFlags
		plf                    pluginFlags
		hostname, memory, swap string
		disk                   string
		pullPolicy             string
		commitName             string
		cpus                   float64
		pidsLimit              int64
		volumes, tmpfs         []string
		sysctls                []string
		devices                []string
		readOnly, tty          bool
		timeout                time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Run a command in a new sandbox, and exit with its status",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := stillRestarting(g); err != nil {
				return err
			}
			opts, err := g.sandboxOptions()
			if err != nil {
				return err
			}
			if opts.Env, err = pf.environment(); err != nil {
				return err
			}
			opts.Args, opts.Dir, opts.User, opts.Hostname = args[1:], pf.dir, pf.user, hostname
			if err := wf.apply(cmd, opts); err != nil {
				return err
			}
			if timeout < 0 {
				return invalidFlag("--timeout %v: want a positive duration, or 0 for none", timeout)
			}
			opts.Stdin, opts.Stdout, opts.Stderr = pf.stdin(cmd), cmd.OutOrStdout(), cmd.ErrOrStderr()
			opts.ReadonlyRootfs, opts.Timeout, opts.TTY = readOnly, timeout, tty
			if err := df.check(cmd, opts, plf.storage != "" || plf.network != "", commitName); err != nil {
				return err
			}
			opts.Name = df.name
			if err := rf.parse(); err != nil {
				return err
			}
			if !df.detach {
				opts.WaitFor, opts.ReadyTimeout = rf.checks, rf.timeout
			}
			if opts.Security, err = sf.config(); err != nil {
				return usageError{err}
			}
			nf.plugin = plf.network != ""
			if err := nf.apply(g, cmd, opts); err != nil {
				return err
			}
			res := &cgroup.Resources{PidsMax: pidsLimit}
			if res.MemoryMax, err = parseMemory(memory); err != nil {
				return invalidFlag("--memory: %w", err)
			}
			if res.MemorySwapMax, err = parseBytes(swap); err != nil {
				return invalidFlag("--memory-swap: %w", err)
			}
			if res.CPUQuota, err = cpuQuota(cpus); err != nil {
				return invalidFlag("--cpus: %w", err)
			}
			if res.CPUQuota > 0 {
				res.CPUPeriod = cpuPeriod
			}
			opts.Resources = res
			if opts.Sysctls, err = parseSysctls(sysctls); err != nil {
				return usageError{err}
			}
			if opts.DiskQuota, err = parseDiskQuota(disk); err != nil {
				return usageError{err}
			}
			for _, v := range volumes {
				m, err := parseVolume(v)
				if err != nil {
					return usageError{err}
				}
				opts.Mounts = append(opts.Mounts, m)
			}
			for _, d := range devices {
				dev, err := parseDevice(d)
				if err != nil {
					return usageError{err}
				}
				opts.Devices = append(opts.Devices, dev)
			}
			for _, t := range tmpfs {
				dst, data, _ := strings.Cut(t, ":")
				opts.Mounts = append(opts.Mounts, sandbox.Mount{Type: "tmpfs", Destination: dst, Options: data})
			}
			// sandboxOptions opened the store already if --root names
			// one; the default store, or the error, comes from here.
			if opts.Storage == nil {
				if opts.Storage, err = g.store(); err != nil {
					return err
				}
			}
			if tty && !df.detach && !term.IsTerminal(int(os.Stdin.Fd())) {
				return invalidFlag("-t: standard input is not a terminal")
			}
			image := args[0]
			if df.detach && detachedChild() && pullPolicy == pullAlways {
				pullPolicy = pullMissing // pulled by the parent
			}
			if df.detach && detachedChild() {
				if image, err = g.restartImage(image); err != nil {
					return err
				}
			}
			if s, ok := opts.Storage.(*layerfs.Store); ok {
				if image, err = ensureImage(cmd.Context(), s, image, pullPolicy, cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			var after func(*sandbox.Sandbox) error
			if commitName != "" {
				if _, err := layerfs.ParseReference(commitName); err != nil {
					return invalidFlag("--commit %s: %w", clip.Quote(commitName), err)
				}
				// The writable layer outlives the workload until the
				// commit, and goes with the sandbox's Close.
				opts.KeepRootfs = true
				after = func(sb *sandbox.Sandbox) error {
					img, err := sb.Commit(context.WithoutCancel(cmd.Context()), commitName, &sandbox.CommitOptions{CreatedBy: "berth run --commit"})
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "berth: committed sandbox %s as %s (%s)\n", sb.ID()[:12], commitName, img.Digest)
					return nil
				}
			}
			if df.detach {
				// Mistakes are the command's to report, at once.
				if err := opts.Validate(); err != nil {
					return err
				}
				if !detachedChild() {
					// A missing image, the commonest mistake, too.
					if s, ok := opts.Storage.(*layerfs.Store); ok {
						if _, err := s.Image(cmd.Context(), image); err != nil {
							return missingImageHint(fmt.Errorf("%w: %w", sandbox.ErrSetup, err), image, pullPolicy)
						}
					}
					id, err := startDetached(cmd, g, df.name)
					if err != nil {
						return err
					}
					return rf.waitDetached(cmd.Context(), id, opts)
				}
				opts.Detachable, opts.Stdin, opts.Stdout, opts.Stderr = true, nil, nil, nil
				if id, _, ok := strings.Cut(os.Getenv(envContainer), "/"); ok && opts.Hostname == "" && len(id) >= 12 {
					// Started again: the host name stays the container's.
					opts.Hostname = id[:12]
				}
				err := runDetachedChild(cmd, g, sandbox.New(image, opts), args[0], opts, &df)
				return missingImageHint(err, image, pullPolicy)
			}
			if err := nameTaken(g.state, df.name); err != nil {
				return err
			}
			closePlugins, err := plf.open(cmd.Context(), g, cmd, opts)
			defer closePlugins()
			if err != nil {
				return err
			}
			err = runSandbox(cmd.Context(), sandbox.New(image, opts), tty, cmd.ErrOrStderr(), opts.Ports, after)
			err = missingImageHint(err, image, pullPolicy)
			if errors.Is(err, sandbox.ErrSeccompCannotStart) && sf.seccomp != "" {
				err = fmt.Errorf("--seccomp %s: %w", sf.seccomp, err)
			}
			// The cgroup parent goes with the last sandbox in it; while
			// others run, rmdir fails and it stays.
			opts.Cgroups.RemoveParent()
			return err
		},
	}
	cmd.Flags().SetInterspersed(false)
	pf.add(cmd)
	wf.add(cmd)
	df.add(cmd)
	rf.add(cmd)
	sf.add(cmd)
	nf.add(cmd)
	plf.add(cmd)
	cmd.Flags().StringVar(&hostname, "hostname", "", "the sandbox's host name")
	cmd.Flags().StringVarP(&memory, "memory", "m", "", "memory limit (e.g. 64m, 1g; at least 1m); default: the preset's (3/4 of the host's RAM, strict 512m)")
	cmd.Flags().StringVar(&swap, "memory-swap", "", "memory+swap limit, as Docker's --memory-swap")
	cmd.Flags().StringVar(&disk, "disk", "", "cap what the sandbox writes to its root filesystem (e.g. 1g; at least 1m)")
	cmd.Flags().Float64Var(&cpus, "cpus", 0, "CPUs the sandbox may use (e.g. 0.5)")
	cmd.Flags().Int64Var(&pidsLimit, "pids-limit", 0, "most processes at once (at least 2, -1 for no limit); default: the preset's (4096, strict 256)")
	cmd.Flags().StringArrayVarP(&volumes, "volume", "v", nil, "bind mount SRC:DST[:OPTIONS], nosuid,nodev unless OPTIONS (comma-separated: ro, suid, dev, noexec) say otherwise; a SRC that is not a path names a volume in the store")
	cmd.Flags().StringArrayVar(&tmpfs, "tmpfs", nil, "mount a tmpfs at DST[:OPTIONS]")
	cmd.Flags().StringArrayVar(&sysctls, "sysctl", nil, "set a kernel parameter of the sandbox's own namespaces (KEY=VALUE, e.g. net.ipv4.ip_unprivileged_port_start=0)")
	cmd.Flags().StringArrayVar(&devices, "device", nil, "give the sandbox a host device: HOST[:CONTAINER[:PERMS]], PERMS some of rwm (default rwm)")
	cmd.Flags().StringVar(&pullPolicy, "pull", pullNever, "pull IMAGE from its registry first: always, missing (when the store lacks it) or never (the default, so that berth makes no network traffic that was not asked for)")
	cmd.Flags().StringVar(&commitName, "commit", "", "once the workload has exited with status 0, save what it wrote as the image NAME[:TAG] (berth commit needs a running sandbox)")
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "make the root filesystem read-only")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give the sandbox a terminal")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give the sandbox this long, start included, then kill it (SIGTERM first with --stop-timeout) and exit 124 (e.g. 10s)")
	return cmd
}

// runSandbox runs sb in the foreground, passing signals on to it, and
// exits with its workload's status. ports are the ports it publishes, as
// asked: those whose host port berth chose are reported on stderr. after,
// if not nil, is called once the workload has exited with status 0,
// before the sandbox is closed; its error is berth's.
func runSandbox(ctx context.Context, sb *sandbox.Sandbox, tty bool, stderr io.Writer, ports []netplug.PortMapping, after func(*sandbox.Sandbox) error) error {
	// Ctrl-C and friends go to the workload, as they would to a program
	// run directly, not to berth: once it runs. Until then, the signals
	// that end ctx stop the start.
	life, end := context.WithCancel(context.WithoutCancel(ctx))
	defer end() // the sandbox has ended by then
	stopStart := context.AfterFunc(ctx, end)
	if tty {
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return err
		}
		defer term.Restore(int(os.Stdin.Fd()), old)
	}
	err := sb.Start(life)
	stopStart()
	if err != nil {
		return err
	}
	defer sb.Close()
	reportChosenPorts(stderr, tty, ports, sb.Attachment())
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	resize := func() {
		if w, h, err := term.GetSize(int(os.Stdin.Fd())); err == nil {
			sb.ResizeTTY(uint16(h), uint16(w))
		}
	}
	if tty {
		resize()
	}
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGWINCH {
				if tty {
					resize()
				}
				continue
			}
			sb.Signal(sig)
		}
	}()
	res, err := sb.Wait()
	res, err = workloadResult(res, err, stderr)
	if err != nil {
		return err
	}
	switch {
	case res.TimedOut:
		fmt.Fprintf(stderr, "berth: sandbox %s timed out\n", sb.ID()[:12])
	case res.OOMKilled:
		fmt.Fprintf(stderr, "berth: sandbox %s ran out of memory (OOM-killed)\n", sb.ID()[:12])
	}
	if res.TimedOut {
		// Whatever status a workload that handled its SIGTERM
		// (--stop-timeout) chose: a run cut short did not succeed.
		if after != nil {
			fmt.Fprintf(stderr, "berth: sandbox %s not committed: it timed out\n", sb.ID()[:12])
		}
		return exitError(exitTimedOut)
	}
	if res.ExitCode != 0 || res.Signal != 0 {
		if after != nil {
			fmt.Fprintf(stderr, "berth: sandbox %s not committed: its workload failed\n", sb.ID()[:12])
		}
		return exitError(res.ExitCode)
	}
	if after != nil {
		return after(sb)
	}
	return nil
}

// workloadResult sorts out what Wait or Exec returned: when the workload
// ran, its Result is what berth exits with, and an error beside it (the
// teardown after it failed) is only a warning on stderr, not a status of
// 125 that would hide the workload's. Only an error with no Result is
// returned as one.
func workloadResult(res *sandbox.Result, err error, stderr io.Writer) (*sandbox.Result, error) {
	if res == nil {
		if err == nil {
			err = errors.New("the sandbox gave no result")
		}
		return nil, err
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth: warning: %s\n", clip.Text(err.Error()))
	}
	return res, nil
}

// parseBytes reads sizes like 512, 64k, 64m, 1g (powers of 1024); "" is 0
// and "-1" is -1 (no limit). A size that is not a whole number of bytes is
// rounded down, but one that rounds to 0, which would mean no limit, is
// refused, as are sizes too large to count.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if s == "-1" {
		return -1, nil
	}
	mult := int64(1)
	num := strings.ToLower(s)
	num = strings.TrimSuffix(num, "b")
	switch {
	case strings.HasSuffix(num, "k"):
		mult, num = 1<<10, num[:len(num)-1]
	case strings.HasSuffix(num, "m"):
		mult, num = 1<<20, num[:len(num)-1]
	case strings.HasSuffix(num, "g"):
		mult, num = 1<<30, num[:len(num)-1]
	case strings.HasSuffix(num, "t"):
		mult, num = 1<<40, num[:len(num)-1]
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(n) || n < 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 64m)", s)
	}
	v := n * float64(mult)
	switch {
	case v >= math.MaxInt64: // as a float64, 2^63
		return 0, fmt.Errorf("size %s is too large (the most is %d bytes, 8 EiB less a byte)", clip.Quote(s), int64(math.MaxInt64))
	case v < 1 && n != 0:
		return 0, fmt.Errorf("size %q is less than a byte", s)
	}
	return int64(v), nil
}

// parseVolume reads SRC:DST[:OPTIONS], OPTIONS a comma-separated list of
// ro, rw and the flags sandbox.Mount takes: suid and dev (bind mounts are
// nosuid,nodev otherwise), noexec, and the defaults nosuid, nodev, exec.
// A relative SRC is taken from the working directory as the kernel names
// it, free of symbolic links, which berth refuses in sources.
func parseVolume(v string) (sandbox.Mount, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return sandbox.Mount{}, fmt.Errorf("-v %q: want SRC:DST[:OPTIONS]", v)
	}
	m := sandbox.Mount{Source: parts[0], Destination: parts[1], Type: "bind"}
	if len(parts) == 3 {
		var flags []string
		for _, o := range strings.Split(parts[2], ",") {
			switch o {
			case "ro":
				m.ReadOnly = true
			case "rw":
				m.ReadOnly = false
			case "suid", "nosuid", "dev", "nodev", "exec", "noexec":
				flags = append(flags, o)
			default:
				return m, fmt.Errorf("-v %q: option %q (want ro, rw, suid, dev or noexec)", v, o)
			}
		}
		m.Options = strings.Join(flags, ",")
	}
	if !strings.ContainsRune(m.Source, '/') {
		m.Type = "volume"
	} else if !filepath.IsAbs(m.Source) {
		wd, err := unix.Getwd()
		if err != nil {
			return m, fmt.Errorf("-v %q: working directory: %w", v, err)
		}
		m.Source = filepath.Join(wd, m.Source)
	}
	return m, nil
}

func newExecCommand(g *globals) *cobra.Command {
	var (
		pf  processFlags
		tty bool
	)
	cmd := &cobra.Command{
		Use:   "exec [flags] SANDBOX COMMAND [ARG...]",
		Short: "Run another command in a running sandbox",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := g.sandboxOptions()
			if err != nil {
				return err
			}
			env, err := pf.environment()
			if err != nil {
				return err
			}
			sb, err := sandbox.Open(cmd.Context(), sandboxRef(g.state, args[0]), opts)
			if err != nil {
				return err
			}
			eo := &sandbox.ExecOptions{
				Args: args[1:], Env: env, Dir: pf.dir, User: pf.user,
				Stdin: pf.stdin(cmd), Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(),
			}
			if tty {
				restore, err := execTerminal(eo)
				if err != nil {
					return err
				}
				defer restore()
			}
			res, err := sb.Exec(cmd.Context(), eo)
			res, err = workloadResult(res, err, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				return exitError(res.ExitCode)
			}
			return nil
		},
	}
	cmd.Flags().SetInterspersed(false)
	pf.add(cmd)
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give the command a terminal")
	return cmd
}

func newKillCommand(g *globals) *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] SANDBOX...",
		Short: "Send a signal (default KILL, which ends the sandbox) to sandboxes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := parseSignal(sig)
			if err != nil {
				return err
			}
			opts, err := g.sandboxOptions()
			if err != nil {
				return err
			}
			for _, id := range args {
				sb, err := sandbox.Open(cmd.Context(), sandboxRef(g.state, id), opts)
				if err != nil {
					return err
				}
				if s == syscall.SIGKILL {
					// Killed by hand, as stopped: not restarted.
					markStopped(g.state, id)
				}
				if err := sb.Signal(s); err != nil {
					return fmt.Errorf("sandbox %s: %w", id, err)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal name or number")
	return cmd
}

func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	for n := 1; n < 32; n++ {
		if strings.TrimPrefix(unix.SignalName(syscall.Signal(n)), "SIG") == name {
			return syscall.Signal(n), nil
		}
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

func newGCCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Reclaim what dead sandboxes left, then unused image data",
		Long: `Reclaim what dead sandboxes left (processes, cgroups, mounts, network
attachments, rootfs and state), whether or not their records can be read,
then the image data nothing uses. Live sandboxes are left alone.

A sandbox made with --storage-plugin or --network-plugin recorded which:
gc starts those plugins again, from the paths recorded (checked as run
checks them), to release its rootfs and detach it. A sandbox whose plugin
is gone or no longer trusted is kept, and named, for a later gc.

gc carries on past what it cannot reclaim, names each such thing and why
on standard error, and then exits with status 1. It also removes the
socket directories plugins left in /run/berth/plugins when the berth that
started them was killed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, store, err := g.recoverOptions()
			if err != nil {
				return err
			}
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			res, rerr := sandbox.Recover(cmd.Context(), opts)
			// Containers whose supervisor died are exited now.
			g.settleOrphans()
			fmt.Fprintf(out, "reclaimed %d dead sandboxes (%d with damaged records), %d stray rootfs, %d stray cgroups\n",
				len(res.Sandboxes), len(res.Damaged), len(res.Rootfs), len(res.Cgroups))
			for _, f := range res.Failed {
				// A plugin's words, and paths from records, among them.
				fmt.Fprintf(errOut, "berth gc: could not reclaim %s\n", clip.Text(f.Error()))
			}
			if rerr != nil && len(res.Failed) == 0 {
				// Recover stopped before it could reclaim anything.
				fmt.Fprintf(errOut, "berth gc: %v\n", rerr)
			}
			// Plugins die with the berth that started them, but a
			// berth killed with -9 leaves their socket directories.
			swept, serr := plugin.SweepRunDir("")
			if len(swept) > 0 {
				fmt.Fprintf(out, "removed %d socket directories of dead plugins\n", len(swept))
			}
			if serr != nil {
				fmt.Fprintf(errOut, "berth gc: %v\n", serr)
				rerr = errors.Join(rerr, serr)
			}
			// The store's own collection goes on regardless: what Recover
			// could not free keeps what it uses.
			gc, err := store.GC(cmd.Context())
			if err != nil {
				fmt.Fprintf(errOut, "berth gc: image data: %v\n", err)
			} else {
				fmt.Fprintf(out, "removed %d blobs and %d layers (%s)\n", gc.Blobs, gc.Layers, humanSize(gc.Bytes))
			}
			if rerr != nil || err != nil {
				// What, and why, is on standard error already.
				return exitError(1)
			}
			return nil
		},
	}
}
