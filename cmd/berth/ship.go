package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/registry"
	"github.com/berth-dev/berth/sandbox"
)

// transferFlags are the flags pull and push share.
type transferFlags struct {
	insecure, quiet bool
}

func (f *transferFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.insecure, "insecure", false, "allow plain HTTP, and TLS without verification, for this registry (loopback registries need not be marked)")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "show no progress, and print only the digest")
}

const pullLong = `Pull an image from a registry into the store.

REF is [REGISTRY/]REPOSITORY[:TAG|@DIGEST]; with no registry it is Docker
Hub's (busybox means docker.io/library/busybox:latest). An index of images
for several platforms gives the one for this host, or for --platform.
Layers the store has are not fetched again, every blob is checked against
its digest as it arrives, and a pull that fails or is interrupted leaves
no image in the store: only the layers it completed and checked, which a
retry does not fetch again and berth image gc removes. A pull unpacks at most --max-size and --max-files,
with the same defaults as berth image import.

Credentials come from Docker's configuration ($DOCKER_CONFIG or
~/.docker/config.json, and the credential helpers it names), which berth
login writes. Registries speak HTTPS; plain HTTP is used only for one on
the loopback interface, or with --insecure.

Prints the image's digest and the name it is stored under; with -q, only
the digest. Progress goes to stderr: bars on a terminal, otherwise a line
for each layer once it is done.`

const pushLong = `Push an image from the store to a registry.

SRC names an image in the store; DEST is the registry reference to push it
to, by default SRC itself (which must then name a registry, such as
registry.example.com/team/app:1). The registry gets the stored manifest,
config and layers byte for byte, so the image keeps its digest. Blobs the
registry has already are not sent again.

Credentials and plain HTTP: as for berth image pull. Prints the digest the
registry holds the image under; with -q, only the digest.`

// newPullCommand returns `pull`, for `berth image pull` and its top-level
// alias `berth pull`.
func newPullCommand(g *globals) *cobra.Command {
	var (
		tf                transferFlags
		platform, maxSize string
		maxFiles          int64
	)
	cmd := &cobra.Command{
		Use:   "pull [flags] REF",
		Short: "Pull an image from a registry into the store",
		Long:  pullLong,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePlatform(platform)
			if err != nil {
				return err
			}
			limits, err := importLimits(maxSize, maxFiles, cmd.Flags().Changed("max-files"))
			if err != nil {
				return err
			}
			s, err := g.storeWith(limits)
			if err != nil {
				return err
			}
			opts := &registry.PullOptions{Options: registry.Options{Insecure: tf.insecure}, Platform: p}
			img, err := pullImage(cmd.Context(), s, args[0], opts, newTransferView(cmd.ErrOrStderr(), tf.quiet, "Pull complete"))
			if errors.Is(err, layerfs.ErrImportTooLarge) {
				// The store's message names import's flags.
				return fmt.Errorf("%w; berth image pull takes --max-size and --max-files too", err)
			}
			if err != nil {
				return err
			}
			if tf.quiet {
				fmt.Fprintln(cmd.OutOrStdout(), img.Digest)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s)\n", img.Digest, pulledName(args[0], img))
			return nil
		},
	}
	tf.add(cmd)
	cmd.Flags().StringVar(&maxSize, "max-size", "", "most the pull may unpack, uncompressed, e.g. 100g; -1 for no limit (default 64g)")
	cmd.Flags().Int64Var(&maxFiles, "max-files", 0, "most files, directories and links the pull may unpack; -1 for no limit (default 4000000)")
	cmd.Flags().StringVar(&platform, "platform", "", "the image to pick from a multi-platform index: os/arch[/variant], e.g. linux/arm64 (default: this host's)")
	return cmd
}

// newPushCommand returns `push`, for `berth image push` and its top-level
// alias `berth push`.
func newPushCommand(g *globals) *cobra.Command {
	var tf transferFlags
	cmd := &cobra.Command{
		Use:   "push [flags] SRC [DEST]",
		Short: "Push an image from the store to a registry",
		Long:  pushLong,
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dest := args[0], ""
			if len(args) == 2 {
				dest = args[1]
			}
			s, err := g.store()
			if err != nil {
				return err
			}
			view := newTransferView(cmd.ErrOrStderr(), tf.quiet, "Pushed")
			opts := &registry.PushOptions{Options: registry.Options{Insecure: tf.insecure, Progress: progressFunc(view)}}
			digest, err := registry.Push(cmd.Context(), s, src, dest, opts)
			finishView(view)
			if err != nil {
				return transferError(cmd.Context(), err)
			}
			if tf.quiet {
				fmt.Fprintln(cmd.OutOrStdout(), digest)
				return nil
			}
			to := src
			if dest != "" {
				to = dest
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s)\n", digest, to)
			return nil
		},
	}
	tf.add(cmd)
	return cmd
}

// pulledName is the name a pull of ref stored img under, the one the
// user will run it by: busybox:latest for busybox or
// docker.io/library/busybox, as Docker shows names, and the reference
// itself elsewhere. Should the store have called it something else, all
// its names are given; a pull by digest alone names nothing.
func pulledName(ref string, img *layerfs.Image) string {
	if r, err := layerfs.ParseReference(ref); err == nil && r.Tag != "" {
		name := r.Name
		for _, hub := range []string{"docker.io/", "index.docker.io/", "registry-1.docker.io/"} {
			if rest, ok := strings.CutPrefix(name, hub); ok {
				name = strings.TrimPrefix(rest, "library/")
				break
			}
		}
		if slices.Contains(img.Names, name+":"+r.Tag) {
			return name + ":" + r.Tag
		}
	}
	if len(img.Names) == 0 {
		return "untagged"
	}
	return strings.Join(img.Names, ", ")
}

// pullImage pulls ref into s, showing its progress on view (which may be
// nil), and returns the image.
func pullImage(ctx context.Context, s *layerfs.Store, ref string, opts *registry.PullOptions, view transferView) (*layerfs.Image, error) {
	opts.Progress = progressFunc(view)
	img, err := registry.Pull(ctx, s, ref, opts)
	finishView(view)
	if err != nil {
		return nil, transferError(ctx, err)
	}
	return img, nil
}

// transferError is err, which names what failed already, said plainly
// when it was the user who stopped it (Ctrl-C) rather than ending in a
// bare "context canceled".
func transferError(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return fmt.Errorf("interrupted: %w", err)
	}
	return err
}

// platformPart is one part of os/arch/variant: what registries' indexes
// spell them with (linux, amd64, arm64, v8, ppc64le, s390x...).
var platformPart = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)

// parsePlatform reads --platform: os/arch or os/arch/variant. Empty means
// none was asked for, and nil is the host's.
func parsePlatform(s string) (*v1.Platform, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "/")
	valid := len(parts) == 2 || len(parts) == 3
	for _, p := range parts {
		valid = valid && platformPart.MatchString(p)
	}
	if !valid {
		return nil, invalidFlag("--platform %s: want os/arch or os/arch/variant in lowercase, e.g. linux/arm64 or linux/arm/v7", clip.Quote(s))
	}
	p := &v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// Pull policies of `berth run --pull`.
const (
	pullNever   = "never"
	pullMissing = "missing"
	pullAlways  = "always"
)

// ensureImage makes sure the store has the image run was given, pulling it
// as policy says, and returns the reference to run it by. Progress of a
// pull goes to stderr as bars on a terminal, and nowhere otherwise: run's
// stderr is the workload's too, and a log of it should hold the
// workload's output.
func ensureImage(ctx context.Context, s *layerfs.Store, ref, policy string, stderr io.Writer) (string, error) {
	switch policy {
	case pullNever, pullMissing, pullAlways:
	default:
		return "", invalidFlag("--pull %s: want never, missing or always", clip.Quote(policy))
	}
	if policy == pullNever {
		// Nothing to do: the sandbox finds the image, or says it is
		// missing (see missingImageHint), without a look here first
		// that would cost every run.
		return ref, nil
	}
	// Failures are the sandbox's setup failing, as they would be were
	// the sandbox package to find the image missing itself.
	if policy == pullMissing {
		_, err := s.Image(ctx, ref)
		switch {
		case err == nil:
			return ref, nil
		case !errors.Is(err, layerfs.ErrNotFound):
			return "", fmt.Errorf("%w: %w", sandbox.ErrSetup, err)
		}
	}
	var view transferView
	if isTerminal(stderr) {
		view = newTransferView(stderr, false, "Pull complete")
	}
	img, err := pullImage(ctx, s, ref, &registry.PullOptions{}, view)
	if err != nil {
		return "", fmt.Errorf("%w: %w", sandbox.ErrSetup, err)
	}
	// The store finds the image by the name it was pulled by, but not
	// always: docker.io/library/busybox is stored as busybox:latest.
	// Then it runs by its digest.
	if found, err := s.Image(ctx, ref); err == nil && found.Digest == img.Digest {
		return ref, nil
	}
	return img.Digest.String(), nil
}

// missingImageHint is err, the failure of a run of ref that was not to
// pull it, saying how to get the image when the store lacks it: which
// image, and the command that gets it, rather than the ID of a sandbox
// that never was.
func missingImageHint(err error, ref, policy string) error {
	if policy == pullNever && errors.Is(err, sandbox.ErrSetup) && errors.Is(err, layerfs.ErrNotFound) {
		return &missingImage{ref: ref, err: err}
	}
	return err
}

// missingImage is the error of a run of an image the store lacks. It
// wraps the sandbox's, so that errors.Is still finds ErrSetup (status
// 125) and layerfs.ErrNotFound.
type missingImage struct {
	ref string
	err error
}

func (e *missingImage) Error() string {
	return fmt.Sprintf("image %s not found in the store; berth pull %s gets it (or berth run --pull missing)", clip.Quote(e.ref), clip.String(e.ref))
}

func (e *missingImage) Unwrap() error { return e.err }

// shipCommands are the top-level commands of registries: pull and push,
// where Docker's habits look for them as well as under `berth image`,
// and login and logout.
func shipCommands(g *globals) []*cobra.Command {
	pull, push := newPullCommand(g), newPushCommand(g)
	pull.Short += " (berth image pull)"
	push.Short += " (berth image push)"
	return []*cobra.Command{pull, push, newLoginCommand(), newLogoutCommand()}
}
