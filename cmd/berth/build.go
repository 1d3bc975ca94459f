package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
)

// buildFlags are `berth build`'s options, as the command line gave them.
type buildFlags struct {
	file      string
	tags      []string
	buildArgs []string
	noCache   bool
	network   string
	quiet     bool
}

func newBuildCommand(g *globals) *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "build [flags] CONTEXT",
		Short: "Build an image from a Dockerfile",
		Long: `Build an image from a Dockerfile and the directory CONTEXT.

Each step is printed as it starts ("Step 3/7 : RUN ..."), then " ---> Using
cache" if an earlier build made it already; RUN steps' output follows. The
image's digest is printed last, alone with -q.

RUN steps run in sandboxes with the Default security preset, no host mounts
and, unless --network names a network (berth network create), no network.
Files .dockerignore names stay out of the context; COPY and ADD read nothing
outside it.

Each step's image stays in the store, untagged (<none> in berth image ls), as
the cache of later builds; berth image rm of one costs only a cache miss.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(args[0])
			if err != nil {
				return err
			}
			if err := f.applyNetwork(g, cmd, opts); err != nil {
				return err
			}
			store, err := g.store()
			if err != nil {
				return err
			}
			cgm, err := cgroup.NewManager(cgroup.Options{Parent: g.cgroupParent, Logger: g.logger()})
			if err != nil {
				return err
			}
			// The cgroup parent goes with the last sandbox in it.
			defer cgm.RemoveParent()
			opts.Cgroups, opts.StateDir, opts.Logger = cgm, g.state, g.logger()
			if !f.quiet {
				out := cmd.OutOrStdout()
				opts.Output = out
				opts.Progress = func(p build.StepProgress) { printStep(out, p) }
			}
			res, err := build.Build(cmd.Context(), store, opts)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.quiet {
				fmt.Fprintln(out, res.Image.Digest)
				return nil
			}
			fmt.Fprintf(out, "Successfully built %s\n", res.Image.Digest)
			for _, t := range opts.Tags {
				fmt.Fprintf(out, "Successfully tagged %s\n", t)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&f.file, "file", "f", "", "the Dockerfile (default CONTEXT/Dockerfile)")
	cmd.Flags().StringArrayVarP(&f.tags, "tag", "t", nil, "name the image NAME[:TAG] (repeatable)")
	cmd.Flags().StringArrayVar(&f.buildArgs, "build-arg", nil, "give an ARG a value: KEY=VALUE, or KEY for the host's value of KEY (repeatable)")
	cmd.Flags().BoolVar(&f.noCache, "no-cache", false, "run every step again, using no step of an earlier build")
	cmd.Flags().StringVar(&f.network, "network", "none", "network of the RUN steps: none, or the name of a network (berth network create, or bridge)")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "print nothing but the image's digest")
	return cmd
}

// options checks the flags and the context directory, and returns the
// build options they make: a mistake is found before anything runs, not
// after the last step.
func (f *buildFlags) options(context string) (*build.Options, error) {
	opts := &build.Options{Context: context, Dockerfile: f.file, NoCache: f.noCache}
	fi, err := os.Stat(context)
	switch {
	case err != nil:
		return nil, fmt.Errorf("build context: %w", err)
	case !fi.IsDir():
		return nil, invalidFlag("build context %s: not a directory", clip.Quote(context))
	}
	// The default Dockerfile is a file of the context, which the build
	// reads inside it (a link there must not show a host file); a file
	// -f names is the user's own, checked here.
	if f.file != "" {
		if fi, err := os.Stat(f.file); err != nil {
			return nil, fmt.Errorf("-f: %w", err)
		} else if !fi.Mode().IsRegular() {
			return nil, invalidFlag("-f %s: not a regular file", clip.Quote(f.file))
		}
	}
	for _, t := range f.tags {
		ref, err := layerfs.ParseReference(t)
		if err != nil {
			return nil, invalidFlag("-t: %w", err)
		}
		if ref.Digest != "" {
			return nil, invalidFlag("-t %s: a tag names an image by name[:tag], not by digest", clip.Quote(t))
		}
		opts.Tags = append(opts.Tags, t)
	}
	if opts.BuildArgs, err = parseBuildArgs(f.buildArgs); err != nil {
		return nil, err
	}
	return opts, nil
}

// parseBuildArgs reads --build-arg KEY=VALUE, and KEY alone for the host's
// value of KEY, left out when the host has none, as Docker does.
func parseBuildArgs(list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	args := make(map[string]string, len(list))
	for _, a := range list {
		key, value, hasValue := strings.Cut(a, "=")
		if key == "" || strings.ContainsAny(key, " \t\n") {
			return nil, invalidFlag("--build-arg %s: want KEY=VALUE or KEY, with a KEY and no spaces in it", clip.Quote(a))
		}
		if !hasValue {
			v, ok := os.LookupEnv(key)
			if !ok {
				continue
			}
			value = v
		}
		args[key] = value
	}
	return args, nil
}

// applyNetwork sets the network RUN steps join. The host's network is
// refused: a build runs what a Dockerfile says, and a Dockerfile from
// elsewhere is not to reach the host's loopback services.
func (f *buildFlags) applyNetwork(g *globals, cmd *cobra.Command, opts *build.Options) error {
	switch {
	case f.network == "none":
		return nil
	case f.network == "host":
		return invalidFlag("--network host: a build's steps do not share the host's network; name a network (berth network create), or bridge")
	case strings.HasPrefix(f.network, "container:"):
		return invalidFlag("--network %s: a build's steps do not join a sandbox's network; name a network (berth network create), or bridge", clip.Quote(f.network))
	}
	nets, err := g.networks()
	if err != nil {
		return err
	}
	if opts.Network, err = nets.Get(cmd.Context(), f.network); err != nil {
		return usageError{fmt.Errorf("--network %s: %w", f.network, err)}
	}
	return nil
}

// printStep prints a step as Docker's classic builder does: a line as it
// starts, before its output; one saying it came from the cache, if it
// did; one naming the image it made.
func printStep(w io.Writer, p build.StepProgress) {
	if !p.Done {
		// A continued line is shown as one; the Dockerfile may be a
		// stranger's, and its words reach a terminal.
		instr := strings.ReplaceAll(strings.ReplaceAll(p.Step.Instruction, "\\\n", " "), "\n", " ")
		fmt.Fprintf(w, "Step %d/%d : %s\n", p.Index, p.Total, clip.Text(instr))
		return
	}
	if p.Step.Cached {
		fmt.Fprintln(w, " ---> Using cache")
	}
	if p.Step.Image.Hex != "" {
		fmt.Fprintf(w, " ---> %s\n", p.Step.Image.Hex[:min(12, len(p.Step.Image.Hex))])
	}
}
