package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

// Named volumes are directories in the store that `berth run -v NAME:DST`
// binds, made on first use, and that outlast the sandboxes that use them.

func newVolumeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Manage named volumes (run -v NAME:DST), which keep data beyond a sandbox",
		Long: `Manage named volumes: directories in the store that berth run -v NAME:DST[:OPTIONS]
binds into a sandbox. A volume is made empty the first time a sandbox or
berth volume create names it, and keeps its files until berth volume rm or
berth volume prune removes it. A name is 1 to 128 letters, digits, '.', '_'
or '-', starting with a letter or digit.

A volume that a running sandbox uses is never removed: rm refuses it and
prune leaves it.`,
	}
	cmd.AddCommand(newVolumeCreateCommand(g), newVolumeListCommand(g), newVolumeRemoveCommand(g), newVolumePruneCommand(g))
	return cmd
}

func newVolumeCreateCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME",
		Short: "Create an empty named volume",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			if _, err := s.CreateVolume(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		},
	}
}

func newVolumeListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List named volumes, the space each takes and the running sandboxes that use it",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			vols, err := s.Volumes(cmd.Context())
			if err != nil {
				return err
			}
			users := sandbox.VolumeUsers(g.state, s)
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSIZE\tUSED BY")
			for _, v := range vols {
				by := "-"
				ids, err := users(v.Name)
				switch {
				case err != nil:
					by = "? (a sandbox record is unreadable: berth gc)"
				case len(ids) > 0:
					for i := range ids {
						ids[i] = ids[i][:min(12, len(ids[i]))]
					}
					by = strings.Join(ids, ",")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Name, humanSize(v.Size), by)
			}
			return tw.Flush()
		},
	}
}

func newVolumeRemoveCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [-f] NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove named volumes and their files; one a running sandbox uses is refused",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			users := sandbox.VolumeUsers(g.state, s)
			// Every name is tried; the command fails if any was not
			// removed, naming each.
			var errs []error
			for _, name := range args {
				err := s.RemoveUnusedVolume(cmd.Context(), name, users)
				if force && errors.Is(err, layerfs.ErrNotFound) {
					continue
				}
				if err != nil {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not fail for volumes that do not exist (a volume in use is still refused)")
	return cmd
}

func newVolumePruneCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "prune",
		Short: "Remove every named volume no running sandbox uses, and the files in it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			res, err := s.PruneVolumes(cmd.Context(), sandbox.VolumeUsers(g.state, s))
			if res != nil {
				for _, name := range res.Removed {
					fmt.Fprintln(cmd.OutOrStdout(), name)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %d volumes (%s)\n", len(res.Removed), humanSize(res.Bytes))
			}
			return err
		},
	}
}
