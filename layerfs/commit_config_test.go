package layerfs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A commit's Config replaces the runtime config and nothing else: the
// rootfs gains the new layer's diff ID, and the history an entry saying
// who made it, how and why.
func TestCommitDiffConfig(t *testing.T) {
	s, base := commitBase(t, nil)
	cfg := &v1.Config{Cmd: []string{"/bin/new"}, Env: []string{"A=1"}, WorkingDir: "/w"}
	opts := &CommitOptions{Config: cfg, Author: "ann", Comment: "why", CreatedBy: "RUN make"}
	img, err := s.CommitDiff(ctx, base, writeDiff(buildTar(t, fileEntry("n", "n", 0o644))), opts)
	if err != nil {
		t.Fatal(err)
	}
	c := img.Config
	if !slices.Equal(c.Config.Cmd, cfg.Cmd) || !slices.Equal(c.Config.Env, cfg.Env) || c.Config.WorkingDir != "/w" {
		t.Errorf("runtime config %+v, want %+v", c.Config, *cfg)
	}
	if len(c.RootFS.DiffIDs) != 2 || c.RootFS.DiffIDs[0] != base.Config.RootFS.DiffIDs[0] || c.RootFS.DiffIDs[1] != img.Layers[1].DiffID {
		t.Errorf("diff IDs %v", c.RootFS.DiffIDs)
	}
	h := c.History[len(c.History)-1]
	if h.CreatedBy != "RUN make" || h.Author != "ann" || h.Comment != "why" || h.EmptyLayer || c.Author != "ann" {
		t.Errorf("history entry %+v, author %q", h, c.Author)
	}
	cfg.Cmd[0] = "changed later"
	if again, err := s.Image(ctx, img.Digest.String()); err != nil || again.Config.Config.Cmd[0] != "/bin/new" {
		t.Errorf("stored config changed with the caller's: %v", err)
	}

	// Without Config and CreatedBy: the parent's config, "berth commit".
	img2, err := s.CommitDiff(ctx, base, writeDiff(buildTar(t, fileEntry("m", "m", 0o644))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := img2.Config.History[len(img2.Config.History)-1].CreatedBy; got != "berth commit" {
		t.Errorf("default created_by %q", got)
	}
	if !slices.Equal(img2.Config.Config.Cmd, base.Config.Config.Cmd) || !slices.Equal(img2.Config.Config.Env, base.Config.Config.Env) {
		t.Errorf("config without opts.Config: %+v, want the parent's %+v", img2.Config.Config, base.Config.Config)
	}
}

// CommitConfig makes an image of the parent's layers with a new config and
// an empty_layer history entry; a sandbox of it sees the parent's files.
func TestCommitConfig(t *testing.T) {
	s, base := commitBase(t, nil)
	cfg := base.Config.Config.DeepCopy()
	cfg.Env = append(cfg.Env, "B=2")
	cfg.Entrypoint = []string{"/entry"}
	img, err := s.CommitConfig(ctx, &Image{Digest: base.Digest}, &CommitOptions{Name: "base:env", Config: cfg, CreatedBy: "ENV B=2"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest == base.Digest || !slices.Equal(img.Names, []string{"base:env"}) {
		t.Fatalf("image %s names %v", img.Digest, img.Names)
	}
	if !slices.Equal(img.Layers, base.Layers) || !slices.Equal(img.Config.RootFS.DiffIDs, base.Config.RootFS.DiffIDs) {
		t.Errorf("layers %+v, want the parent's %+v", img.Layers, base.Layers)
	}
	if !slices.Contains(img.Config.Config.Env, "B=2") || !slices.Equal(img.Config.Config.Entrypoint, []string{"/entry"}) {
		t.Errorf("config %+v", img.Config.Config)
	}
	h := img.Config.History
	if len(h) != len(base.Config.History)+1 || !h[len(h)-1].EmptyLayer || h[len(h)-1].CreatedBy != "ENV B=2" {
		t.Errorf("history %+v", h)
	}
	want := listTree(t, prepare(t, s, "parent", base).Path)
	if d := diffTrees(want, listTree(t, prepare(t, s, "child", img).Path)); len(d) > 0 {
		t.Errorf("rootfs of the config-only image differs from the parent's: %v", d)
	}

	if _, err := s.CommitConfig(ctx, nil, nil); err == nil {
		t.Error("CommitConfig of no parent: no error")
	}
	if _, err := s.CommitConfig(ctx, &Image{Digest: digestBytes([]byte("none"))}, nil); err == nil {
		t.Error("CommitConfig of an unknown parent: no error")
	}
}

// Only a runtime's stubs at mount points are left out of a commit: a
// directory or an empty file there. A file with content, a link, and
// whatever lies under a mount point's directory stay; a diff that fails
// still fails the commit.
func TestCommitMountPoints(t *testing.T) {
	s, base := commitBase(t, nil)
	diff := buildTar(t,
		dirEntry("proc/", 0o555), fileEntry("hosts", "", 0o644),
		fileEntry("full", "content", 0o644), symlinkEntry("link", "/etc"),
		dirEntry("mnt/", 0o755), fileEntry("mnt/under", "u", 0o644), fileEntry("other", "", 0o644))
	img, err := s.CommitDiff(ctx, base, writeDiff(diff), &CommitOptions{MountPoints: []string{"/proc", "hosts", "/full", "/link/", "/mnt"}})
	if err != nil {
		t.Fatal(err)
	}
	r := prepare(t, s, "stubs", img)
	for _, gone := range []string{"proc", "hosts"} {
		if _, err := os.Lstat(filepath.Join(r.Path, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stub /%s: %v, want it left out", gone, err)
		}
	}
	for _, kept := range []string{"full", "link", "mnt/under", "other", "a"} {
		if _, err := os.Lstat(filepath.Join(r.Path, kept)); err != nil {
			t.Errorf("/%s: %v, want it kept", kept, err)
		}
	}

	errCut := errors.New("cut")
	failing := func(ctx context.Context, w io.Writer) error {
		w.Write(diff[:1024])
		return errCut
	}
	if _, err := s.CommitDiff(ctx, base, failing, &CommitOptions{MountPoints: []string{"/proc"}}); !errors.Is(err, errCut) {
		t.Errorf("a failing diff through the filter: %v, want %v", err, errCut)
	}
}
