package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

// store opens the store named by --root with the default options.
func (g *globals) store() (*layerfs.Store, error) {
	return g.storeWith(layerfs.Options{})
}

// storeOrNil opens the store named by --root, or returns nil to let the
// sandbox package use the store a sandbox's own record names.
func (g *globals) storeOrNil() sandbox.Storage {
	if g.root == "" {
		return nil
	}
	s, err := g.store()
	if err != nil {
		return nil
	}
	return s
}

func newImageCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage the images in the store"}
	cmd.AddCommand(
		newImageImportCommand(g),
		newImageListCommand(g),
		newImageInspectCommand(g),
		newImageRemoveCommand(g),
		newImageExportCommand(g),
		newImageTagCommand(g),
		newImageGCCommand(g),
		newImageCheckCommand(g),
		newPullCommand(g),
		newPushCommand(g),
	)
	return cmd
}

func newImageImportCommand(g *globals) *cobra.Command {
	var name, maxSize string
	var maxFiles int64
	cmd := &cobra.Command{
		Use:   "import PATH",
		Short: "Import an OCI layout, docker-archive, rootfs tarball or directory",
		Long: `Import an OCI layout, docker-archive, rootfs tarball or directory.

An import unpacks at most --max-size (default 64g) uncompressed and
--max-files (default 4000000) files, directories and links, and leaves 1 GiB
(or 5% of a smaller filesystem) free in the store; past any of these it stops
and leaves nothing behind. -1 lifts a limit.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			limits, err := importLimits(maxSize, maxFiles, cmd.Flags().Changed("max-files"))
			if err != nil {
				return err
			}
			s, err := g.storeWith(limits)
			if err != nil {
				return err
			}
			opts := &layerfs.ImportOptions{Name: name}
			var bar *progressBar
			if term.IsTerminal(int(os.Stderr.Fd())) {
				bar = &progressBar{w: os.Stderr, label: "importing " + filepath.Base(args[0])}
				opts.Progress = bar.update
			}
			img, err := s.Import(cmd.Context(), args[0], opts)
			bar.finish()
			if err != nil {
				return err
			}
			names := strings.Join(img.Names, ", ")
			if names == "" {
				names = "untagged; name it with --name or berth image tag"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s)\n", img.Digest, names)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name:tag for the imported image (default: the name the source carries); picks the image of an archive that holds several")
	cmd.Flags().StringVar(&maxSize, "max-size", "", "most the import may unpack, uncompressed, e.g. 100g; -1 for no limit (default 64g)")
	cmd.Flags().Int64Var(&maxFiles, "max-files", 0, "most files, directories and links the import may unpack; -1 for no limit (default 4000000)")
	return cmd
}

// importLimits reads the import command's --max-size and --max-files into
// store options; maxFilesSet tells whether --max-files was given. A value
// that makes no sense is a usage error: below -1, or 0 said outright (the
// options' zero means the default, which is not what a user asking for 0
// expects).
func importLimits(maxSize string, maxFiles int64, maxFilesSet bool) (layerfs.Options, error) {
	var o layerfs.Options
	if maxSize != "" {
		n, err := parseBytes(maxSize)
		if err != nil {
			return o, invalidFlag("--max-size: %w", err)
		}
		if n == 0 || n < -1 {
			return o, invalidFlag("--max-size %s: want a size of at least a byte, or -1 for no limit", clip.Quote(maxSize))
		}
		o.MaxImportSize = n
	}
	if maxFiles < -1 || (maxFilesSet && maxFiles == 0) {
		return o, invalidFlag("--max-files %d: want at least 1, or -1 for no limit", maxFiles)
	}
	o.MaxImportEntries = maxFiles
	return o, nil
}

// storeWith opens the store named by --root (or the default one) with
// opts, its logger berth's.
func (g *globals) storeWith(opts layerfs.Options) (*layerfs.Store, error) {
	root := g.root
	if root == "" {
		root = layerfs.DefaultRoot()
	}
	opts.Logger = g.logger()
	return layerfs.Open(root, &opts)
}

// progressBar redraws one line on a terminal at most ten times a second.
type progressBar struct {
	w     io.Writer
	label string
	last  time.Time
	drawn bool
}

func (p *progressBar) update(done, total int64) {
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond {
		p.last = now
		p.drawn = true
		if total > 0 {
			fmt.Fprintf(p.w, "\r%s: %s / %s (%d%%)\033[K", p.label, humanSize(done), humanSize(total), done*100/total)
		} else {
			fmt.Fprintf(p.w, "\r%s: %s\033[K", p.label, humanSize(done))
		}
	}
}

func (p *progressBar) finish() {
	if p != nil && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func newImageListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the images in the store",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			images, err := s.Images(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tDIGEST\tLAYERS\tSIZE\tIMPORTED")
			for _, img := range images {
				names := img.Names
				if len(names) == 0 {
					names = []string{"<none>"}
				}
				for _, n := range names {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", n, img.Digest.Hex[:12], len(img.Layers), humanSize(img.Size()), img.Imported.Local().Format(time.DateTime))
				}
			}
			return tw.Flush()
		},
	}
}

// inspectView is what `image inspect` prints.
type inspectView struct {
	Digest       string          `json:"digest"`
	Names        []string        `json:"names"`
	MediaType    string          `json:"mediaType"`
	ConfigDigest string          `json:"configDigest"`
	Size         int64           `json:"size"`
	Imported     time.Time       `json:"imported"`
	Layers       []layerfs.Layer `json:"layers"`
	Config       json.RawMessage `json:"config"`
}

func newImageInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect REF",
		Short: "Print an image's manifest digest, layers and config as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			img, err := s.Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			v := inspectView{
				Digest: img.Digest.String(), Names: img.Names, MediaType: string(img.MediaType),
				ConfigDigest: img.ConfigDigest.String(), Size: img.Size(), Imported: img.Imported,
				Layers: img.Layers, Config: img.RawConfig,
			}
			if v.Names == nil {
				v.Names = []string{}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		},
	}
}

func newImageRemoveCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [-f] REF...",
		Aliases: []string{"remove"},
		Short:   "Remove names, or images by digest; `berth image gc` frees the space",
		Long: `Remove names, or images by digest. Removing an image's last name removes
the image. An image that a container or sandbox of the state directory
was started from is kept, as Docker keeps it: a container started again
runs the image it was made from. -f removes it all the same; that
container's next start then fails.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			for _, ref := range args {
				if !force {
					if err := g.imageInUse(cmd.Context(), s, ref); err != nil {
						return err
					}
				}
				if err := s.Remove(cmd.Context(), ref); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove an image that containers were started from")
	return cmd
}

// errImageInUse is image rm's refusal of an image a container or sandbox
// was started from.
var errImageInUse = errors.New("image is in use")

// imageInUse returns errImageInUse if removing ref would remove an image
// (not just one of its names) that a container or a live sandbox of the
// state directory was started from. Other state directories sharing the
// store are not looked at.
func (g *globals) imageInUse(ctx context.Context, s *layerfs.Store, ref string) error {
	img, err := s.Image(ctx, ref)
	if err != nil {
		return nil // Remove says what is wrong
	}
	if r, err := layerfs.ParseReference(ref); err == nil && r.Digest == "" && slices.Contains(img.Names, r.String()) && len(img.Names) > 1 {
		return nil // a name goes; the image keeps its others
	}
	digest := img.Digest.String()
	cs, err := listContainers(g.state)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Last != nil && c.Last.ImageDigest == digest {
			return fmt.Errorf("%w: %s: container %s (%s) was started from it; berth rm the container first, or image rm -f",
				errImageInUse, clip.Quote(ref), cell(c.Name, 128), c.ID[:12])
		}
	}
	records, err := sandbox.ReadRecords(g.state)
	if err != nil {
		return err
	}
	for _, r := range records {
		if r.State != nil && r.Owned && r.State.ImageDigest == digest {
			return fmt.Errorf("%w: %s: sandbox %s runs it; end it first, or image rm -f", errImageInUse, clip.Quote(ref), r.ID[:12])
		}
	}
	return nil
}

func newImageTagCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tag REF NAME",
		Short: "Give an image another name",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			return s.Tag(cmd.Context(), args[0], args[1])
		},
	}
}

func newImageExportCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "export REF PATH",
		Short: "Write an image as an OCI layout (a directory or tar) or a docker-archive tar; PATH - is stdout",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var f layerfs.Format
			switch format {
			case "oci":
				f = layerfs.FormatOCILayout
			case "docker":
				f = layerfs.FormatDockerArchive
			default:
				return fmt.Errorf("--format %q: want oci or docker", format)
			}
			s, err := g.store()
			if err != nil {
				return err
			}
			ref, dst := args[0], args[1]
			if dst == "-" {
				return s.Export(cmd.Context(), ref, cmd.OutOrStdout(), f)
			}
			if fi, err := os.Stat(dst); (err == nil && fi.IsDir()) || strings.HasSuffix(dst, "/") {
				if f != layerfs.FormatOCILayout {
					return fmt.Errorf("%s is a directory: a docker-archive is a tar file", dst)
				}
				return s.ExportLayout(cmd.Context(), ref, dst)
			}
			// The archive appears at dst only once it is whole: a
			// failed or killed export leaves no partial file.
			return s.ExportFile(cmd.Context(), ref, dst, f)
		},
	}
	cmd.Flags().StringVar(&format, "format", "oci", "oci or docker")
	return cmd
}

func newImageGCCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Delete blobs and layers no image or rootfs uses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			res, err := s.GC(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d blobs and %d layers (%s), %d interrupted imports\n", res.Blobs, res.Layers, humanSize(res.Bytes), res.Staging)
			return nil
		},
	}
}

// errStoreDamaged is what `image check` fails with when it found problems,
// which it has printed already.
var errStoreDamaged = errors.New("the store has problems")

// strayRootfses returns the keys of the sandboxes' rootfses in s whose
// sandbox has no state directory in stateDir: those berth gc reclaims.
func strayRootfses(ctx context.Context, s *layerfs.Store, stateDir string) ([]string, error) {
	keys, err := s.Rootfses(ctx)
	if err != nil {
		return nil, err
	}
	var stray []string
	for _, key := range keys {
		id, ok := strings.CutPrefix(key, "sandbox-")
		if !ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(stateDir, id)); errors.Is(err, os.ErrNotExist) {
			stray = append(stray, key)
		}
	}
	return stray, nil
}

func newImageCheckCommand(g *globals) *cobra.Command {
	var layers bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify every blob's digest and layer's diff ID, and list what is missing, orphaned or left over",
		Long: `Verify the image store: every blob must hash to its digest, every layer
blob must decompress to the diff ID its image gives it, every image must have
its manifest, config, layer blobs and unpacked layers, every name must point
at an image and every prepared rootfs must have its record and a sandbox
in the --state directory that owns it. Blobs and layers nothing uses, and
files interrupted operations left, are listed too (berth image gc removes
them; berth gc, stray rootfses). With --layers, every layer in use is also
unpacked again from its blob and compared, file by file, with the store's
unpacked copy, which sandboxes run. Prints one problem a line and exits 1
if there is any. Other operations on the store wait while it runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			problems, err := s.Check(cmd.Context(), &layerfs.CheckOptions{Layers: layers})
			if err != nil {
				return err
			}
			for _, p := range problems {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			stray, err := strayRootfses(cmd.Context(), s, g.state)
			if err != nil {
				return err
			}
			for _, key := range stray {
				fmt.Fprintf(cmd.OutOrStdout(), "stray rootfs: %s: no sandbox in %s owns it (berth gc reclaims it)\n", filepath.Join(s.Root(), "rootfs", key), g.state)
			}
			if n := len(problems) + len(stray); n > 0 {
				return fmt.Errorf("%w: %d found in %s", errStoreDamaged, n, s.Root())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&layers, "layers", false, "also compare each unpacked layer's files with a fresh unpack of its blob")
	return cmd
}
