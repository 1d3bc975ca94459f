package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
)

// builder carries out one Build.
type builder struct {
	store *layerfs.Store
	opts  *Options
	ctx   *buildContext
	df    *dockerfile
	cache *cache
	lex   *shell.Lex
	steps []Step
	// stages are the images of the stages built so far, by name
	// (lower-cased) and by index.
	stages      map[string]*layerfs.Image
	usedArgs    map[string]bool
	scratchOnce *layerfs.Image
}

// stageState is a stage being built.
type stageState struct {
	img  *layerfs.Image
	cfg  *configState
	args map[string]string // build arguments declared in this stage
}

func (b *builder) run(ctx context.Context) (*layerfs.Image, error) {
	b.lex = shell.NewLex(b.df.escape)
	b.stages = map[string]*layerfs.Image{}
	b.usedArgs = map[string]bool{}
	// ARGs before the first FROM are for the FROM lines, and give the
	// defaults of stage ARGs of the same name.
	meta := map[string]string{}
	for _, s := range b.df.metaArgs {
		a := s.cmd.(*instructions.ArgCommand)
		if err := b.declareArgs(meta, meta, a, nil); err != nil {
			return nil, b.df.errorf(s.line, "%s: %w", s.text, err)
		}
	}
	var last *layerfs.Image
	for i, st := range b.df.stages {
		img, err := b.buildStage(ctx, st, meta)
		if err != nil {
			return nil, err
		}
		b.stages[fmt.Sprint(i)] = img
		if st.from.Name != "" {
			b.stages[strings.ToLower(st.from.Name)] = img
		}
		last = img
	}
	for k := range b.opts.BuildArgs {
		if !b.usedArgs[k] {
			b.opts.Logger.Warn("build argument not consumed by the Dockerfile", "arg", k)
		}
	}
	return last, nil
}

// declareArgs adds a's arguments to args: the value given with
// BuildArgs, else the default written (expanded), else defaults' value.
func (b *builder) declareArgs(args, defaults map[string]string, a *instructions.ArgCommand, cs *configState) error {
	for _, kv := range a.Args {
		if v, ok := b.opts.BuildArgs[kv.Key]; ok {
			args[kv.Key] = v
			b.usedArgs[kv.Key] = true
			continue
		}
		if kv.Value != nil {
			env := argEnv(args, cs)
			v, _, err := b.lex.ProcessWord(*kv.Value, shell.EnvsFromSlice(env))
			if err != nil {
				return err
			}
			args[kv.Key] = v
			continue
		}
		if v, ok := defaults[kv.Key]; ok {
			args[kv.Key] = v
			continue
		}
		args[kv.Key] = ""
	}
	return nil
}

func argEnv(args map[string]string, cs *configState) []string {
	var env []string
	for _, k := range sortedKeys(args) {
		env = append(env, k+"="+args[k])
	}
	if cs != nil {
		env = append(env, cs.cfg.Env...)
	}
	return env
}

func (b *builder) buildStage(ctx context.Context, st *stage, meta map[string]string) (*layerfs.Image, error) {
	start := time.Now()
	b.starting(st.line, st.text)
	base, _, err := b.lex.ProcessWord(st.from.BaseName, shell.EnvsFromSlice(argEnv(meta, nil)))
	if err != nil {
		return nil, b.df.errorf(st.line, "%s: %w", st.text, err)
	}
	if st.from.Platform != "" {
		return nil, b.df.errorf(st.line, "FROM --platform: %w", ErrUnsupported)
	}
	img, err := b.baseImage(ctx, base)
	if err != nil {
		return nil, b.df.errorf(st.line, "%s: %w", st.text, err)
	}
	b.record(st.line, st.text, false, start, img)
	cfg := img.Config.Config.DeepCopy()
	ss := &stageState{img: img, cfg: &configState{cfg: cfg}, args: map[string]string{}}
	for _, s := range st.steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := b.buildStep(ctx, ss, s, meta); err != nil {
			return nil, err
		}
	}
	return ss.img, nil
}

// baseImage is the image FROM names: an earlier stage, scratch, or an
// image in the store. berth build fetches nothing itself.
func (b *builder) baseImage(ctx context.Context, name string) (*layerfs.Image, error) {
	if img, ok := b.stages[strings.ToLower(name)]; ok {
		return img, nil
	}
	if name == "scratch" {
		return b.scratch(ctx)
	}
	img, err := b.store.Image(ctx, name)
	if errors.Is(err, layerfs.ErrNotFound) {
		return nil, fmt.Errorf("image %s is not in the store (berth image pull %s): %w", name, name, err)
	}
	return img, err
}

// scratch is an image with one layer holding only "/": the store keeps
// no image without layers. It is the same image on every build, so the
// cache works across builds FROM scratch.
func (b *builder) scratch(ctx context.Context) (*layerfs.Image, error) {
	if b.scratchOnce != nil {
		return b.scratchOnce, nil
	}
	f, err := os.CreateTemp("", "berth-scratch-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	// The store takes no empty archive: the layer holds the root
	// directory alone.
	tw := tar.NewWriter(f)
	err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	img, err := b.store.Import(ctx, f.Name(), nil)
	if err != nil {
		return nil, fmt.Errorf("scratch: %w", err)
	}
	b.scratchOnce = img
	return img, nil
}

// starting reports that the step at line begins.
func (b *builder) starting(line int, text string) {
	if b.opts.Progress != nil {
		b.opts.Progress(StepProgress{Index: len(b.steps) + 1, Total: b.df.count(), Step: Step{Line: line, Instruction: text}})
	}
}

func (b *builder) record(line int, text string, cached bool, start time.Time, img *layerfs.Image) {
	s := Step{Line: line, Instruction: text, Cached: cached, Duration: time.Since(start), Image: img.Digest}
	b.steps = append(b.steps, s)
	if b.opts.Progress != nil {
		b.opts.Progress(StepProgress{Index: len(b.steps), Total: b.df.count(), Done: true, Step: s})
	}
	b.opts.Logger.Info("build step", "line", line, "instruction", text, "cached", cached, "duration", s.Duration, "image", img.Digest)
}

// buildStep carries out one instruction, from the cache if it can.
func (b *builder) buildStep(ctx context.Context, ss *stageState, s step, meta map[string]string) error {
	start := time.Now()
	b.starting(s.line, s.text)
	fail := func(err error) error { return b.df.errorf(s.line, "%s: %w", clipText(s.text), err) }
	if a, ok := s.cmd.(*instructions.ArgCommand); ok {
		// An ARG changes no image: it only gives values to what follows.
		if err := b.declareArgs(ss.args, meta, a, ss.cfg); err != nil {
			return fail(err)
		}
		b.record(s.line, s.text, false, start, ss.img)
		return nil
	}
	var sources *sourceSet
	switch c := s.cmd.(type) {
	case *instructions.CopyCommand:
		if err := c.Expand(ss.cfg.expander(b.lex, ss.args)); err != nil {
			return fail(err)
		}
		if c.Link || c.Parents || len(c.ExcludePatterns) > 0 || len(c.SourceContents) > 0 {
			return fail(fmt.Errorf("COPY --link, --parents, --exclude and here-documents: %w", ErrUnsupported))
		}
		src := b.ctx
		if c.From != "" {
			tree, release, err := b.fromTree(ctx, c.From, ss)
			if err != nil {
				return fail(err)
			}
			defer release()
			src = tree
		}
		set, err := collectSources(src, c.SourcePaths, false, b.cache.dir, b.maxCopy())
		if err != nil {
			return fail(err)
		}
		defer set.Close()
		sources = set
	case *instructions.AddCommand:
		if err := c.Expand(ss.cfg.expander(b.lex, ss.args)); err != nil {
			return fail(err)
		}
		for _, src := range c.SourcePaths {
			if isRemote(src) {
				return fail(fmt.Errorf("%s: URLs and git sources (berth builds fetch nothing; download it into the context and ADD the file): %w", src, ErrUnsupported))
			}
		}
		if c.Link || len(c.ExcludePatterns) > 0 || c.Checksum != "" || c.Unpack != nil || c.KeepGitDir != nil || len(c.SourceContents) > 0 {
			return fail(fmt.Errorf("ADD --link, --exclude, --checksum, --unpack, --keep-git-dir and here-documents: %w", ErrUnsupported))
		}
		set, err := collectSources(b.ctx, c.SourcePaths, true, b.cache.dir, b.maxCopy())
		if err != nil {
			return fail(err)
		}
		defer set.Close()
		sources = set
	case *instructions.OnbuildCommand:
		return fail(fmt.Errorf("ONBUILD: %w", ErrUnsupported))
	}

	src := ""
	if sources != nil {
		src = sources.digest
	}
	key := cacheKey(ss.img.Digest, s.text, ss.args, src)
	if !b.opts.NoCache {
		if img := b.cache.get(ctx, key); img != nil {
			if err := b.advance(ss, s, img); err != nil {
				return fail(err)
			}
			b.record(s.line, s.text, true, start, img)
			return nil
		}
	}
	var img *layerfs.Image
	var err error
	switch c := s.cmd.(type) {
	case *instructions.RunCommand:
		img, err = b.runStep(ctx, ss, s, c)
	case *instructions.CopyCommand:
		img, err = b.copyStep(ctx, ss, s, sources, c.DestPath, c.Chown, c.Chmod)
	case *instructions.AddCommand:
		img, err = b.copyStep(ctx, ss, s, sources, c.DestPath, c.Chown, c.Chmod)
	case *instructions.WorkdirCommand:
		if err = ss.cfg.apply(s.cmd, b.lex, ss.args); err == nil {
			img, err = b.workdirStep(ctx, ss, s)
		}
	default:
		if err = ss.cfg.apply(s.cmd, b.lex, ss.args); err == nil {
			img, err = b.store.CommitConfig(ctx, ss.img, &layerfs.CommitOptions{Config: ss.cfg.cfg.DeepCopy(), CreatedBy: s.text})
		}
	}
	if err != nil {
		var le *LineError
		if errors.As(err, &le) {
			return err
		}
		return fail(err)
	}
	if err := b.cache.put(key, img); err != nil {
		b.opts.Logger.Warn("build cache: cannot record a step", "line", s.line, "err", err)
	}
	ss.img = img
	if _, ok := s.cmd.(*instructions.CmdCommand); ok {
		ss.cfg.cmdSet = true
	}
	b.record(s.line, s.text, false, start, img)
	return nil
}

// advance moves the stage to img, a cached result of s, keeping what
// Docker's rules remember beyond the config.
func (b *builder) advance(ss *stageState, s step, img *layerfs.Image) error {
	ss.img = img
	ss.cfg.cfg = img.Config.Config.DeepCopy()
	if _, ok := s.cmd.(*instructions.CmdCommand); ok {
		ss.cfg.cmdSet = true
	}
	return nil
}

// copyStep makes the layer of a COPY or ADD over the stage's image.
func (b *builder) copyStep(ctx context.Context, ss *stageState, s step, set *sourceSet, dest, chown, chmod string) (*layerfs.Image, error) {
	mode, err := parseChmod(chmod)
	if err != nil {
		return nil, err
	}
	if dest == "" {
		return nil, errors.New("no destination")
	}
	abs := dest
	if !path.IsAbs(dest) {
		wd := ss.cfg.cfg.WorkingDir
		if wd == "" {
			wd = "/"
		}
		abs = path.Join(wd, dest)
		if strings.HasSuffix(dest, "/") || dest == "." {
			abs += "/"
		}
	}
	key := "build-" + randomID()
	rootfs, err := b.store.Prepare(ctx, key, ss.img, nil)
	if err != nil {
		return nil, fmt.Errorf("look at the parent image: %w", err)
	}
	defer b.store.Release(context.WithoutCancel(ctx), key)
	root, err := openImageRoot(rootfs.Path)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	own, err := root.resolveOwner(chown)
	if err != nil {
		return nil, err
	}
	pl, err := root.place(abs, set, own)
	if err != nil {
		return nil, err
	}
	diff := func(ctx context.Context, w io.Writer) error { return writeLayer(ctx, w, set, pl, own, mode) }
	return b.store.CommitDiff(ctx, ss.img, diff, &layerfs.CommitOptions{Config: ss.cfg.cfg.DeepCopy(), CreatedBy: s.text})
}

// isRemote reports whether an ADD source is a URL or a git repository.
func isRemote(src string) bool {
	for _, p := range []string{"http://", "https://", "git://", "git@", "ssh://"} {
		if strings.HasPrefix(src, p) {
			return true
		}
	}
	return strings.Contains(src, "://")
}

// clipText is an instruction as errors quote it: a long RUN line is
// cut, so that the error still reads as one line.
func clipText(text string) string {
	text = strings.Join(strings.Fields(text), " ")
	if len(text) > 120 {
		return text[:117] + "..."
	}
	return text
}

// fromTree opens the files of COPY --from=name: an earlier stage (by
// name or index) or an image in the store, in a rootfs prepared for the
// step and released by release.
func (b *builder) fromTree(ctx context.Context, name string, ss *stageState) (*buildContext, func(), error) {
	name, _, err := b.lex.ProcessWord(name, shell.EnvsFromSlice(argEnv(ss.args, nil)))
	if err != nil {
		return nil, nil, err
	}
	img, err := b.baseImage(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("--from=%s: %w", name, err)
	}
	key := "build-from-" + randomID()
	rfs, err := b.store.Prepare(ctx, key, img, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("--from=%s: %w", name, err)
	}
	release := func() { b.store.Release(context.WithoutCancel(ctx), key) }
	tree, err := openTree(rfs.Path)
	if err != nil {
		release()
		return nil, nil, err
	}
	return tree, func() { tree.Close(); release() }, nil
}

// workdirStep commits a WORKDIR: the directory, and the parents it lacks,
// as a layer if the image has no such directory (owned by the stage's
// USER, as in Docker), else the config alone.
func (b *builder) workdirStep(ctx context.Context, ss *stageState, s step) (*layerfs.Image, error) {
	opts := &layerfs.CommitOptions{Config: ss.cfg.cfg.DeepCopy(), CreatedBy: s.text}
	key := "build-" + randomID()
	rootfs, err := b.store.Prepare(ctx, key, ss.img, nil)
	if err != nil {
		return nil, fmt.Errorf("look at the parent image: %w", err)
	}
	defer b.store.Release(context.WithoutCancel(ctx), key)
	root, err := openImageRoot(rootfs.Path)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if _, st, err := root.resolve(ss.cfg.cfg.WorkingDir); err != nil {
		return nil, err
	} else if st != nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, fmt.Errorf("%s is not a directory in the image", ss.cfg.cfg.WorkingDir)
		}
		return b.store.CommitConfig(ctx, ss.img, opts)
	}
	own, err := root.resolveOwner(ss.cfg.cfg.User)
	if err != nil {
		own = nil // a USER the image lacks fails the RUN that needs it, as in Docker
	}
	pl, err := root.place(ss.cfg.cfg.WorkingDir+"/", &sourceSet{}, own)
	if err != nil {
		return nil, err
	}
	diff := func(ctx context.Context, w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, hdr := range pl.parents {
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		}
		return tw.Close()
	}
	return b.store.CommitDiff(ctx, ss.img, diff, opts)
}

func (b *builder) maxCopy() int64 {
	if b.opts.MaxCopySize > 0 {
		return b.opts.MaxCopySize
	}
	return layerfs.DefaultMaxImportSize
}
