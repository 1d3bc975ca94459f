// Command berth runs programs in sandboxes made from OCI images and
// manages the images they are made from.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/sandbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	// The workload's own exit status is passed on silently.
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(int(ee))
	}
	fmt.Fprintf(os.Stderr, "berth: %v\n", err)
	// Docker's conventions, which scripts around containers expect: 125
	// when the sandbox could not be made, 126 when the program could not
	// be run, 127 when there is no such program.
	switch {
	case errors.Is(err, sandbox.ErrExec) && errors.Is(err, syscall.ENOENT):
		os.Exit(127)
	case errors.Is(err, sandbox.ErrExec):
		os.Exit(126)
	case errors.Is(err, sandbox.ErrSetup):
		os.Exit(125)
	}
	os.Exit(1)
}

// exitError carries an exit code other than 1 out of a command.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// globals are the flags every command shares.
type globals struct {
	root, state, cgroupParent string
	debug                     bool
}

func (g *globals) logger() *slog.Logger {
	level := slog.LevelWarn
	if g.debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// sandboxOptions are the Options every sandbox command starts from.
func (g *globals) sandboxOptions() (*sandbox.Options, error) {
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: g.cgroupParent, Logger: g.logger()})
	if err != nil {
		return nil, err
	}
	return &sandbox.Options{StateDir: g.state, Cgroups: cgm, Logger: g.logger(), Storage: g.storeOrNil()}, nil
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "berth",
		Short:         "Run programs in hardened sandboxes made from OCI images",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.root, "root", "", "image store directory (default $BERTH_ROOT or /var/lib/berth)")
	root.PersistentFlags().StringVar(&g.state, "state", sandbox.DefaultStateDir, "directory for the state of running sandboxes")
	root.PersistentFlags().StringVar(&g.cgroupParent, "cgroup-parent", "berth", "cgroup under which sandboxes' cgroups go")
	root.PersistentFlags().BoolVar(&g.debug, "debug", false, "log what berth does to stderr")
	root.AddCommand(newImageCommand(g), newRunCommand(g), newExecCommand(g), newPsCommand(g), newKillCommand(g), newGCCommand(g), newSecurityCommand(), newNetworkCommand(g))
	return root
}
