// Command berth runs programs in sandboxes made from OCI images and
// manages the images they are made from.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/sandbox"
)

func main() {
	// SIGHUP too (a closed terminal): a command it would otherwise end
	// outright could leave work half done, such as a sandbox that commit
	// froze while it read it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses of berth's own, Docker's and podman's, which scripts
// around containers expect. Any other status is the workload's.
const (
	exitFailure  = 1   // a command other than run or exec failed
	exitTimedOut = 124 // run's --timeout ran out, as timeout(1) says
	exitSetup    = 125 // the command line was not understood, or the sandbox could not be made
	exitCannot   = 126 // the program could not be run
	exitNotFound = 127 // there is no such program
)

// execute runs the command line args and returns the status to exit
// with, having printed any error to stderr.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// run -d starts berth again with the same command line.
	cmd, err := root.ExecuteContextC(context.WithValue(ctx, argvKey{}, args))
	if err == nil {
		return 0
	}
	// The workload's own exit status is passed on silently.
	var ee exitError
	if errors.As(err, &ee) {
		return int(ee)
	}
	fmt.Fprintf(stderr, "berth: %s\n", clip.Text(err.Error()))
	return exitCode(cmd, err)
}

// exitCode is the status a command that failed with err exits with.
func exitCode(cmd *cobra.Command, err error) int {
	var usage usageError
	switch {
	case errors.Is(err, sandbox.ErrExec) && errors.Is(err, syscall.ENOENT):
		return exitNotFound
	case errors.Is(err, sandbox.ErrExec):
		return exitCannot
	case errors.Is(err, sandbox.ErrSetup), errors.As(err, &usage):
		return exitSetup
	case startsWorkload(cmd):
		// Status 1 is the workload's: run and exec never claim it for
		// their own failures, whether the sandbox package or the
		// command's own checks of its options found them.
		return exitSetup
	}
	return exitFailure
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
		Use:   "berth",
		Short: "Run programs in hardened sandboxes made from OCI images",
		Long: `Run programs in hardened sandboxes made from OCI images.

Exit status: run and exec exit with their workload's status, or 125 if
berth could not make the sandbox (or start the process), 126 if the
program cannot be run and 127 if there is no such program; run exits 124
if its --timeout ran out, as timeout(1) does. Every command
exits 125 for a command line it does not understand, and other commands
1 when they fail.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.root, "root", "", "image store directory (default $BERTH_ROOT or /var/lib/berth)")
	root.PersistentFlags().StringVar(&g.state, "state", sandbox.DefaultStateDir, "directory for the state of running sandboxes")
	root.PersistentFlags().StringVar(&g.cgroupParent, "cgroup-parent", "berth", "cgroup under which sandboxes' cgroups go")
	root.PersistentFlags().BoolVar(&g.debug, "debug", false, "log what berth does to stderr")
	run, exec := newRunCommand(g), newExecCommand(g)
	markWorkload(run)
	markWorkload(exec)
	root.AddCommand(newImageCommand(g), newBuildCommand(g), run, exec, newPsCommand(g), newKillCommand(g), newGCCommand(g), newSecurityCommand(), newNetworkCommand(g), newVolumeCommand(g), newPluginCommand(g))
	root.AddCommand(shipCommands(g)...)
	root.AddCommand(newCommitCommand(g))
	root.AddCommand(newStopCommand(g), newRestartCommand(g), newWaitCommand(g), newRmCommand(g), newReapCommand(g))
	root.AddCommand(newCopyCommand(g))
	root.AddCommand(newLogsCommand(g), newInspectCommand(g), newPortCommand(g), newTopCommand(g), newStatsCommand(g))
	strictUsage(root)
	return root
}
