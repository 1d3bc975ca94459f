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
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/sandbox"
)

// processFlags are the flags `berth run` and `berth exec` share.
type processFlags struct {
	env         []string
	dir, user   string
	interactive bool
}

func (f *processFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable (KEY=VALUE, or KEY to pass the host's)")
	cmd.Flags().StringVarP(&f.dir, "workdir", "w", "", "working directory inside the sandbox")
	cmd.Flags().StringVarP(&f.user, "user", "u", "", "user[:group], by name or number")
	cmd.Flags().BoolVarP(&f.interactive, "interactive", "i", false, "pass standard input to the sandbox")
}

func (f *processFlags) environment() []string {
	var out []string
	for _, e := range f.env {
		if !strings.Contains(e, "=") {
			v, ok := os.LookupEnv(e)
			if !ok {
				continue
			}
			e += "=" + v
		}
		out = append(out, e)
	}
	return out
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
		sf                     securityFlags
		nf                     networkFlags
		hostname, memory, swap string
		disk                   string
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
			opts, err := g.sandboxOptions()
			if err != nil {
				return err
			}
			opts.Args, opts.Env, opts.Dir, opts.User, opts.Hostname = args[1:], pf.environment(), pf.dir, pf.user, hostname
			opts.Stdin, opts.Stdout, opts.Stderr = pf.stdin(cmd), cmd.OutOrStdout(), cmd.ErrOrStderr()
			opts.ReadonlyRootfs, opts.Timeout, opts.TTY = readOnly, timeout, tty
			if opts.Security, err = sf.config(); err != nil {
				return err
			}
			if err := nf.apply(g, cmd, opts); err != nil {
				return err
			}
			res := &cgroup.Resources{PidsMax: pidsLimit}
			if res.MemoryMax, err = parseBytes(memory); err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			if res.MemorySwapMax, err = parseBytes(swap); err != nil {
				return fmt.Errorf("--memory-swap: %w", err)
			}
			if res.CPUQuota, err = cpuQuota(cpus); err != nil {
				return fmt.Errorf("--cpus: %w", err)
			}
			if res.CPUQuota > 0 {
				res.CPUPeriod = cpuPeriod
			}
			opts.Resources = res
			if opts.Sysctls, err = parseSysctls(sysctls); err != nil {
				return err
			}
			if opts.DiskQuota, err = parseDiskQuota(disk); err != nil {
				return err
			}
			for _, v := range volumes {
				m, err := parseVolume(v)
				if err != nil {
					return err
				}
				opts.Mounts = append(opts.Mounts, m)
			}
			for _, d := range devices {
				dev, err := parseDevice(d)
				if err != nil {
					return err
				}
				opts.Devices = append(opts.Devices, dev)
			}
			for _, t := range tmpfs {
				dst, data, _ := strings.Cut(t, ":")
				opts.Mounts = append(opts.Mounts, sandbox.Mount{Type: "tmpfs", Destination: dst, Options: data})
			}
			store, err := g.store()
			if err != nil {
				return err
			}
			opts.Storage = store
			if tty && !term.IsTerminal(int(os.Stdin.Fd())) {
				return errors.New("-t: standard input is not a terminal")
			}
			err = runSandbox(cmd.Context(), sandbox.New(args[0], opts), tty, cmd.ErrOrStderr())
			// The cgroup parent goes with the last sandbox in it; while
			// others run, rmdir fails and it stays.
			opts.Cgroups.RemoveParent()
			return err
		},
	}
	cmd.Flags().SetInterspersed(false)
	pf.add(cmd)
	sf.add(cmd)
	nf.add(cmd)
	cmd.Flags().StringVar(&hostname, "hostname", "", "the sandbox's host name")
	cmd.Flags().StringVarP(&memory, "memory", "m", "", "memory limit (e.g. 64m, 1g); default: the preset's (3/4 of the host's RAM, strict 512m)")
	cmd.Flags().StringVar(&swap, "memory-swap", "", "memory+swap limit, as Docker's --memory-swap")
	cmd.Flags().StringVar(&disk, "disk", "", "cap what the sandbox writes to its root filesystem (e.g. 1g; at least 1m)")
	cmd.Flags().Float64Var(&cpus, "cpus", 0, "CPUs the sandbox may use (e.g. 0.5)")
	cmd.Flags().Int64Var(&pidsLimit, "pids-limit", 0, "most processes at once; default: the preset's (4096, strict 256)")
	cmd.Flags().StringArrayVarP(&volumes, "volume", "v", nil, "bind mount SRC:DST[:OPTIONS], nosuid,nodev unless OPTIONS (comma-separated: ro, suid, dev, noexec) say otherwise; a SRC that is not a path names a volume in the store")
	cmd.Flags().StringArrayVar(&tmpfs, "tmpfs", nil, "mount a tmpfs at DST[:OPTIONS]")
	cmd.Flags().StringArrayVar(&sysctls, "sysctl", nil, "set a kernel parameter of the sandbox's own namespaces (KEY=VALUE, e.g. net.ipv4.ip_unprivileged_port_start=0)")
	cmd.Flags().StringArrayVar(&devices, "device", nil, "give the sandbox a host device: HOST[:CONTAINER[:PERMS]], PERMS some of rwm (default rwm)")
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "make the root filesystem read-only")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give the sandbox a terminal")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "kill the sandbox after this long (e.g. 10s)")
	return cmd
}

// runSandbox runs sb in the foreground, passing signals on to it, and
// exits with its workload's status.
func runSandbox(ctx context.Context, sb *sandbox.Sandbox, tty bool, stderr io.Writer) error {
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
	if err != nil {
		return err
	}
	switch {
	case res.TimedOut:
		fmt.Fprintf(stderr, "berth: sandbox %s timed out\n", sb.ID()[:12])
	case res.OOMKilled:
		fmt.Fprintf(stderr, "berth: sandbox %s ran out of memory (OOM-killed)\n", sb.ID()[:12])
	}
	if res.ExitCode != 0 {
		return exitError(res.ExitCode)
	}
	return nil
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
		return 0, fmt.Errorf("size %q is too large", s)
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
	var pf processFlags
	cmd := &cobra.Command{
		Use:   "exec [flags] SANDBOX COMMAND [ARG...]",
		Short: "Run another command in a running sandbox",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := g.sandboxOptions()
			if err != nil {
				return err
			}
			sb, err := sandbox.Open(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			res, err := sb.Exec(cmd.Context(), &sandbox.ExecOptions{
				Args: args[1:], Env: pf.environment(), Dir: pf.dir, User: pf.user,
				Stdin: pf.stdin(cmd), Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(),
			})
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
				sb, err := sandbox.Open(cmd.Context(), id, opts)
				if err != nil {
					return err
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

func newPsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ps",
		Short: "List sandboxes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			states, err := sandbox.ReadStates(g.state)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS")
			for _, st := range states {
				status := "running"
				if !st.Alive() {
					status = "dead (berth gc reclaims it)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\n", st.ID[:12], st.Image, strings.Join(st.Args, " "),
					time.Since(st.Created).Round(time.Second), status)
			}
			return tw.Flush()
		},
	}
}

func newGCCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Reclaim what dead sandboxes left, then unused image data",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			opts, err := g.sandboxOptions()
			if err != nil {
				return err
			}
			opts.Storage = store
			if opts.Networks, err = g.networks(); err != nil {
				return err
			}
			res, err := sandbox.Recover(cmd.Context(), opts)
			fmt.Fprintf(cmd.OutOrStdout(), "reclaimed %d dead sandboxes, %d stray rootfs, %d stray cgroups\n", len(res.Sandboxes), len(res.Rootfs), len(res.Cgroups))
			if err != nil {
				return err
			}
			gc, err := store.GC(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d blobs and %d layers (%s)\n", gc.Blobs, gc.Layers, humanSize(gc.Bytes))
			return nil
		},
	}
}
