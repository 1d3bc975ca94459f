package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/sandbox"
)

func newCommitCommand(g *globals) *cobra.Command {
	var (
		author, message string
		changes         []string
		pause           bool
	)
	cmd := &cobra.Command{
		Use:   "commit [flags] SANDBOX [NAME[:TAG]]",
		Short: "Save a running sandbox's changes as a new image",
		Long: `Commit saves what a running sandbox changed in its root filesystem as a
new layer on top of its image, and stores the result as a new image,
tagged NAME[:TAG] if given. It prints the new image's digest.

SANDBOX is an ID or a unique prefix of one, as for exec. Only a running
sandbox can be named. One whose workload has ended has lost its root
filesystem, unless a Go program started it with Options.KeepRootfs (berth
ps shows it as exited, rootfs kept): then only that program can commit it.
To save what a command leaves behind once it has exited, run it with
berth run --commit NAME[:TAG].

The sandbox is frozen while its changes are read, so that the layer is
one moment of its files, and thawed afterwards, on an interrupt too; but
a commit killed outright (kill -9) leaves it frozen until its owner kills
or closes it. --pause=false leaves it running. The new image has its
image's configuration (never the options the sandbox was run with), with
--change instructions applied: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
WORKDIR, STOPSIGNAL, HEALTHCHECK, SHELL, VOLUME and MAINTAINER, as in a
Dockerfile.`,
		Example: `  berth commit -m "add the data" 3f2a9c alpine:data
  berth commit -c 'CMD ["/app"]' -c 'ENV MODE=prod' 3f2a9c app:1`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			opts, err := g.sandboxOptions()
			if err != nil {
				return err
			}
			sb, err := sandbox.Open(cmd.Context(), sandboxRef(g.state, args[0]), opts)
			if errors.Is(err, sandbox.ErrNotRunning) {
				return fmt.Errorf("%w: berth commit needs a running sandbox", err)
			}
			if err != nil {
				return err
			}
			defer sb.Close()
			copts := &sandbox.CommitOptions{Author: author, Message: message, NoPause: !pause}
			if len(changes) > 0 {
				cfg := sb.Image().Config.Config.DeepCopy()
				if err := build.ApplyChanges(cfg, changes); err != nil {
					return fmt.Errorf("--change: %w", err)
				}
				copts.Config = cfg
			}
			img, err := sb.Commit(cmd.Context(), name, copts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), img.Digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&author, "author", "a", "", "the new image's author")
	f.StringVarP(&message, "message", "m", "", "a comment for the new layer's history entry")
	f.StringArrayVarP(&changes, "change", "c", nil, "a Dockerfile instruction changing the image's configuration (repeatable)")
	f.BoolVar(&pause, "pause", true, "freeze the sandbox while its changes are read")
	return cmd
}
