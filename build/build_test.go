package build

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/layerfs"
)

// lineOf returns the line a build error names, or 0.
func lineOf(err error) int {
	var le *LineError
	if errors.As(err, &le) {
		return le.Line
	}
	return 0
}

func TestErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, dockerfile string
		line             int
		is               error
		says             string
	}{
		{"unknown instruction", "FROM alpine:test\nENV A=1\nBOGUS x\n", 3, nil, "unknown instruction"},
		{"onbuild", "FROM alpine:test\nONBUILD RUN true\n", 2, ErrUnsupported, "ONBUILD"},
		{"add url", "FROM alpine:test\n\nADD https://example.com/x.tar.gz /x\n", 3, ErrUnsupported, "fetch nothing"},
		{"add git", "FROM alpine:test\nADD git@github.com:a/b.git /x\n", 2, ErrUnsupported, "git"},
		{"missing image", "FROM nosuch:image\n", 1, nil, "berth image pull nosuch:image"},
		{"copy outside", "FROM alpine:test\nCOPY ../x /x\n", 2, ErrOutsideContext, "outside the build context"},
		{"copy missing", "FROM alpine:test\nWORKDIR /a\nCOPY nosuch /x\n", 3, ErrNoSource, "nosuch"},
		{"instruction before from", "ENV A=1\nFROM alpine:test\n", 1, nil, "before the first FROM"},
		{"bad chmod", "FROM alpine:test\nCOPY Dockerfile /x\nCOPY --chmod=u+x Dockerfile /y\n", 3, nil, "octal"},
		{"run mount", "FROM alpine:test\nRUN --mount=type=cache,target=/x true\n", 2, ErrUnsupported, "mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeContext(t, map[string]string{"Dockerfile": tc.dockerfile})
			_, err := build(t, dir, nil)
			if err == nil {
				t.Fatal("build succeeded")
			}
			if got := lineOf(err); got != tc.line {
				t.Errorf("error %q names line %d, want %d", err, got, tc.line)
			}
			if !strings.HasPrefix(err.Error(), "Dockerfile:") {
				t.Errorf("error %q does not begin Dockerfile:N:", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

// ARGs before FROM serve FROM; stage ARGs take --build-arg values or
// their defaults; ENV and later instructions expand them; no ARG reaches
// the image's environment.
func TestArgsAndEnv(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": `ARG BASE=alpine:nosuch
FROM $BASE
ARG DIR=/opt
ARG UNSET
ENV APP=${DIR}/app MODE=${UNSET:-dflt}
WORKDIR $APP
LABEL version=${VERSION:-none} dir="$DIR"
USER 1000
EXPOSE 8080
CMD ["./serve"]
`})
	res, err := build(t, dir, func(o *Options) {
		o.BuildArgs = map[string]string{"BASE": "alpine:test", "DIR": "/srv"}
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := res.Image.Config.Config
	for _, e := range cfg.Env {
		if strings.HasPrefix(e, "DIR=") || strings.HasPrefix(e, "BASE=") {
			t.Errorf("build argument in the image's environment: %s", e)
		}
	}
	if !contains(cfg.Env, "APP=/srv/app") || !contains(cfg.Env, "MODE=dflt") {
		t.Errorf("Env = %q, want APP=/srv/app and MODE=dflt", cfg.Env)
	}
	if cfg.WorkingDir != "/srv/app" {
		t.Errorf("WorkingDir = %q, want /srv/app", cfg.WorkingDir)
	}
	if d := cmp.Diff(map[string]string{"version": "none", "dir": "/srv"}, cfg.Labels); d != "" {
		t.Errorf("Labels (-want +got):\n%s", d)
	}
	if cfg.User != "1000" || !cmp.Equal(cfg.Cmd, []string{"./serve"}) {
		t.Errorf("User %q Cmd %q", cfg.User, cfg.Cmd)
	}
	if _, ok := cfg.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("ExposedPorts = %v", cfg.ExposedPorts)
	}
	hist := res.Image.Config.History
	if last := hist[len(hist)-1]; last.CreatedBy != `CMD ["./serve"]` || !last.EmptyLayer {
		t.Errorf("last history entry = %+v, want CMD as an empty layer", last)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A link in the context is copied as a link, never followed to a host
// file; a source named through a link resolves inside the context.
func TestContextLinksStayInside(t *testing.T) {
	dir := writeContext(t, map[string]string{
		"Dockerfile":    "FROM alpine:test\nCOPY tree /tree/\n",
		"tree/ordinary": "x",
	})
	for name, target := range map[string]string{
		"tree/shadow":  "/etc/shadow",
		"tree/climb":   "../../../../../../etc/passwd",
		"passwdlink":   "/etc/passwd",
		"escape":       "../../../../../../etc",
		"tree/selfdir": ".",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		for name, want := range map[string]string{"tree/shadow": "/etc/shadow", "tree/climb": "../../../../../../etc/passwd"} {
			got, err := os.Readlink(filepath.Join(root, name))
			if err != nil || got != want {
				t.Errorf("%s in the image: link %q, %v; want a link to %q", name, got, err, want)
			}
		}
	})
	// Named sources resolve in the context as if it were the root:
	// these name the context's own (missing) etc/passwd.
	for _, src := range []string{"passwdlink", "escape/passwd", "/etc/passwd"} {
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM alpine:test\nCOPY "+src+" /x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := build(t, dir, nil)
		if !errors.Is(err, ErrNoSource) {
			t.Errorf("COPY %s: error %v, want ErrNoSource", src, err)
		}
	}
}

// A FIFO planted in the context is neither opened for reading (which
// would hang the build) nor copied as a file.
func TestContextFIFO(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nCOPY pipe /pipe\n"})
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := build(t, dir, nil); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("COPY of a FIFO succeeded")
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("COPY of a FIFO hangs")
	}
}

func TestDockerignoreAndGlobs(t *testing.T) {
	dir := writeContext(t, map[string]string{
		"Dockerfile":    "FROM alpine:test\nCOPY . /all/\nCOPY *.txt /txt/\nCOPY sub/*.txt /subtxt/\n",
		".dockerignore": "secret\n*.log\n!keep.log\nsub/private\n",
		"a.txt":         "a",
		"b.txt":         "b",
		"c.md":          "c",
		"secret":        "s",
		"x.log":         "x",
		"keep.log":      "k",
		"sub/d.txt":     "d",
		"sub/private/p": "p",
		"sub/e.md":      "e",
	})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		for _, want := range []string{"all/a.txt", "all/keep.log", "all/sub/d.txt", "all/Dockerfile", "all/.dockerignore", "txt/a.txt", "txt/b.txt", "subtxt/d.txt"} {
			if _, err := os.Lstat(filepath.Join(root, want)); err != nil {
				t.Errorf("%s missing: %v", want, err)
			}
		}
		for _, unwanted := range []string{"all/secret", "all/x.log", "all/sub/private", "txt/c.md", "txt/keep.log", "subtxt/e.md"} {
			if _, err := os.Lstat(filepath.Join(root, unwanted)); err == nil {
				t.Errorf("%s copied", unwanted)
			}
		}
	})
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM alpine:test\nCOPY secret /s\n"), 0o644)
	if _, err := build(t, dir, nil); !errors.Is(err, ErrNoSource) {
		t.Errorf("COPY of an ignored file: %v, want ErrNoSource", err)
	}
}

// COPY places files as Docker does: into an existing directory named
// without a trailing slash, through the image's links, with --chown
// names from the image's /etc/passwd and --chmod; parents it passes keep
// the image's mode and owner.
func TestCopyPlacement(t *testing.T) {
	dir := writeContext(t, map[string]string{
		"Dockerfile": `FROM alpine:test
COPY f /usr/bin
COPY f /var/run/
COPY --chown=nobody:nogroup --chmod=0640 f /etc/owned
COPY f /new/deep/
COPY f /renamed
`,
		"f": "content",
	})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		for _, p := range []string{"usr/bin/f", "run/f", "etc/owned", "new/deep/f", "renamed"} {
			b, err := os.ReadFile(filepath.Join(root, p))
			if err != nil || string(b) != "content" {
				t.Errorf("%s: %q, %v", p, b, err)
			}
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(root, "etc/owned"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 65534 || st.Gid != 65533 || st.Mode&0o7777 != 0o640 {
			t.Errorf("etc/owned: uid %d gid %d mode %o, want 65534 65533 640 (nobody, nogroup)", st.Uid, st.Gid, st.Mode&0o7777)
		}
		if fi, err := os.Lstat(filepath.Join(root, "var/run")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("var/run is no longer the image's link: %v %v", fi, err)
		}
		if err := syscall.Lstat(filepath.Join(root, "etc"), &st); err != nil || st.Mode&0o7777 != 0o755 || st.Uid != 0 {
			t.Errorf("etc: mode %o uid %d, %v; want the image's 755 root", st.Mode&0o7777, st.Uid, err)
		}
	})
}

// ADD unpacks local archives, confining their names under the
// destination; the same files give the same layer.
func TestAddArchive(t *testing.T) {
	var plain bytes.Buffer
	tw := tar.NewWriter(&plain)
	for _, e := range []struct{ name, body string }{{"dir/file", "inside"}, {"../../../evil", "confined"}, {"/abs", "abs"}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(e.body))
	}
	tw.Close()
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain.Bytes())
	zw.Close()
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(plain.Bytes())
	ze.Close()
	dir := writeContext(t, map[string]string{
		"Dockerfile": "FROM alpine:test\nADD a.tar /plain/\nADD a.tgz /gz/\nADD a.tar.zst /zst/\nADD notes.txt /notes.txt\n",
		"a.tar":      plain.String(),
		"a.tgz":      gz.String(),
		"a.tar.zst":  zs.String(),
		"notes.txt":  "not an archive",
	})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		for _, d := range []string{"plain", "gz", "zst"} {
			for p, want := range map[string]string{"dir/file": "inside", "evil": "confined", "abs": "abs"} {
				b, err := os.ReadFile(filepath.Join(root, d, p))
				if err != nil || string(b) != want {
					t.Errorf("%s/%s: %q, %v; want %q", d, p, b, err, want)
				}
			}
		}
		if _, err := os.Lstat(filepath.Join(root, "evil")); err == nil {
			t.Error("an archive entry named ../../../evil left the destination")
		}
		if b, _ := os.ReadFile(filepath.Join(root, "notes.txt")); string(b) != "not an archive" {
			t.Errorf("notes.txt = %q", b)
		}
	})
}

// The same files, with other times, give the same layer: a rebuild
// elsewhere or after a fresh checkout makes the same image.
func TestCopyLayerIsDeterministic(t *testing.T) {
	files := map[string]string{"Dockerfile": "FROM alpine:test\nCOPY . /app/\n", "a": "1", "d/b": "2"}
	var diffIDs []string
	for i := range 2 {
		dir := writeContext(t, files)
		old := time.Date(2001+i, 1, 1, 0, 0, 0, 0, time.UTC)
		os.Chtimes(filepath.Join(dir, "a"), old, old)
		res, err := build(t, dir, func(o *Options) { o.NoCache = true })
		if err != nil {
			t.Fatal(err)
		}
		l := res.Image.Layers
		diffIDs = append(diffIDs, l[len(l)-1].DiffID.String())
	}
	if diffIDs[0] != diffIDs[1] {
		t.Errorf("the same files made layers %s and %s", diffIDs[0], diffIDs[1])
	}
}

// COPY --from takes files from an earlier stage, by name or index, or
// from an image in the store; the stage's links stay links.
func TestMultiStage(t *testing.T) {
	dir := writeContext(t, map[string]string{
		"Dockerfile": `FROM alpine:test AS tools
COPY f /out/f
FROM scratch
COPY --from=tools /out/ /got/
COPY --from=0 /out/f /byindex
COPY --from=alpine:test /etc/alpine-release /release
COPY --from=tools /var/run /varrun
`,
		"f": "from the first stage",
	})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		for p, want := range map[string]string{"got/f": "from the first stage", "byindex": "from the first stage"} {
			if b, err := os.ReadFile(filepath.Join(root, p)); err != nil || string(b) != want {
				t.Errorf("%s: %q, %v", p, b, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(root, "release")); err != nil || !strings.HasPrefix(string(b), "3.20") {
			t.Errorf("release: %q, %v", b, err)
		}
		if _, err := os.Lstat(filepath.Join(root, "etc")); err == nil {
			t.Error("scratch stage holds the first stage's /etc")
		}
	})
	again, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Image.Digest != res.Image.Digest {
		t.Errorf("rebuild FROM scratch made %s, first %s", again.Image.Digest, res.Image.Digest)
	}
}

// WORKDIR makes the directory it names if the image lacks it, owned by
// the stage's USER, and adds no layer when the image has it.
func TestWorkdirCreated(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nWORKDIR /etc\nUSER nobody\nWORKDIR /srv/app\n"})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hist := res.Image.Config.History; !hist[len(hist)-3].EmptyLayer || hist[len(hist)-1].EmptyLayer {
		t.Errorf("WORKDIR /etc should add no layer and WORKDIR /srv/app one: %+v", hist[len(hist)-3:])
	}
	inImage(t, res.Image, func(root string) {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(root, "srv/app"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Uid != 65534 {
			t.Errorf("srv/app: mode %o uid %d, %v; want a directory of nobody's", st.Mode, st.Uid, err)
		}
	})
}

// An archive that unpacks past MaxCopySize stops there.
func TestAddBounded(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	tw := tar.NewWriter(zw)
	const size = 64 << 20
	tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: size, Typeflag: tar.TypeReg})
	tw.Write(make([]byte, size))
	tw.Close()
	zw.Close()
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nADD bomb.tgz /x/\n", "bomb.tgz": gz.String()})
	_, err := build(t, dir, func(o *Options) { o.MaxCopySize = 1 << 20 })
	if !errors.Is(err, ErrTooLarge) || lineOf(err) != 2 {
		t.Errorf("ADD of a 64 MiB archive under a 1 MiB bound: %v, want ErrTooLarge on line 2", err)
	}
}

// An archive whose entry goes through a link it made itself (lnk ->
// /tmp/x, then lnk/file) writes nothing outside the layer: not on the
// host, and not through the image's own links either.
func TestAddArchiveThroughItsOwnLink(t *testing.T) {
	hostDir := t.TempDir()
	var plain bytes.Buffer
	tw := tar.NewWriter(&plain)
	tw.WriteHeader(&tar.Header{Name: "lnk", Typeflag: tar.TypeSymlink, Linkname: hostDir, Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "lnk/planted", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4})
	tw.Write([]byte("evil"))
	tw.Close()
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nADD a.tar /x/\n", "a.tar": plain.String()})
	_, err := build(t, dir, nil)
	if _, serr := os.Lstat(filepath.Join(hostDir, "planted")); serr == nil {
		t.Fatalf("ADD wrote through the archive's link to the host (build error: %v)", err)
	}
	t.Logf("build: %v", err)
}

// A hostile image whose directory is a link to a host path (/out ->
// the test's directory) takes COPY's files inside the image, at that
// path under its own root, never on the host.
func TestCopyIntoHostileImageLink(t *testing.T) {
	hostDir := t.TempDir()
	ctx := context.Background()
	if err := testenv.ImportAlpineWith(ctx, testEnv.Store, "alpine-hostlink:test", testenv.Symlinks(map[string]string{"out": hostDir, "etc/passwd": "/etc/shadow"})...); err != nil {
		t.Fatal(err)
	}
	dir := writeContext(t, map[string]string{
		"Dockerfile": "FROM alpine-hostlink:test\nCOPY f /out/\nCOPY --chown=nobody f /owned\n",
		"f":          "copied",
	})
	_, err := build(t, dir, nil)
	if _, serr := os.Lstat(filepath.Join(hostDir, "f")); serr == nil {
		t.Fatal("COPY followed the image's link to the host")
	}
	// The image's /etc/passwd is a link to /etc/shadow: inside the image,
	// where there is no such file; the host's is never read.
	if err == nil || lineOf(err) != 3 || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("COPY --chown with the image's passwd a link to shadow: %v, want an error on line 3", err)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM alpine-hostlink:test\nCOPY f /out/\n"), 0o644)
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		if b, err := os.ReadFile(filepath.Join(root, hostDir, "f")); err != nil || string(b) != "copied" {
			t.Errorf("%s/f in the image: %q, %v", hostDir, b, err)
		}
	})
}

// The cache key of a COPY covers the files' modes and names as well as
// their bytes.
func TestCopyCacheSeesModesAndNames(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nCOPY d /d/\n", "d/a": "same"})
	cachedAfter := func(change func()) bool {
		t.Helper()
		change()
		res, err := build(t, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Steps[len(res.Steps)-1].Cached
	}
	cachedAfter(func() {})
	if !cachedAfter(func() {}) {
		t.Error("unchanged COPY not cached")
	}
	if cachedAfter(func() { os.Chmod(filepath.Join(dir, "d/a"), 0o755) }) {
		t.Error("COPY cached after a mode change")
	}
	if cachedAfter(func() { os.Rename(filepath.Join(dir, "d/a"), filepath.Join(dir, "d/b")) }) {
		t.Error("COPY cached after a rename")
	}
	if !cachedAfter(func() { os.Chtimes(filepath.Join(dir, "d/b"), time.Unix(1, 0), time.Unix(1, 0)) }) {
		t.Error("COPY not cached after only a time changed")
	}
}

// Whether a CMD came earlier in the stage is part of an ENTRYPOINT's
// step: the same parent image reached with and without one (here an
// image built with CMD, then the same CMD taken from the cache) must not
// share a cache entry, or the ENTRYPOINT keeps or clears the wrong Cmd.
func TestEntrypointCacheSeesCmdInStage(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nCMD [\"cmd-in-stage\"]\n"})
	if _, err := build(t, dir, func(o *Options) { o.Tags = []string{"cmdbase:test"} }); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM cmdbase:test\nENTRYPOINT [\"/entry\"]\n"), 0o644)
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cmd := res.Image.Config.Config.Cmd; cmd != nil {
		t.Errorf("ENTRYPOINT after an inherited CMD: Cmd = %q, want none", cmd)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM alpine:test\nCMD [\"cmd-in-stage\"]\nENTRYPOINT [\"/entry\"]\n"), 0o644)
	res, err = build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cmd := res.Image.Config.Config.Cmd; !cmp.Equal(cmd, []string{"cmd-in-stage"}) {
		t.Errorf("ENTRYPOINT after a CMD of its stage: Cmd = %q, want [cmd-in-stage] (steps %+v)", cmd, res.Steps)
	}
}

// A source that was a file and is now a directory holding one file of
// the same name, mode and content gives the same entries, but another
// placement (COPY a /dst makes /dst the file, or /dst/a): not a cache
// hit.
func TestCopyCacheSeesFileOrDirectory(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nCOPY a /fileordir\n", "a": "same"})
	if _, err := build(t, dir, nil); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "a"))
	if err := os.Mkdir(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "a"), []byte("same"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		if b, err := os.ReadFile(filepath.Join(root, "fileordir", "a")); err != nil || string(b) != "same" {
			t.Errorf("COPY of a directory after the same COPY of a file: fileordir/a %q, %v (steps %+v)", b, err, res.Steps)
		}
	})
}

// A store opened through a symbolic link (a home or state directory
// under a linked path) still places COPY's files: paths resolved in the
// image are taken relative to the root the kernel resolved, not to the
// path as the store was given it.
func TestCopyWithStoreThroughLink(t *testing.T) {
	link := filepath.Join(t.TempDir(), "store-link")
	if err := os.Symlink(testEnv.Store.Root(), link); err != nil {
		t.Fatal(err)
	}
	store, err := layerfs.Open(link, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nCOPY f /usr/bin\nWORKDIR /linked/wd\n", "f": "through a link"})
	res, err := Build(context.Background(), store, &Options{Context: dir, Cgroups: testEnv.Cgroups, StateDir: testEnv.StateDir})
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		if b, err := os.ReadFile(filepath.Join(root, "usr/bin/f")); err != nil || string(b) != "through a link" {
			t.Errorf("usr/bin/f: %q, %v", b, err)
		}
	})
}

// ADD unpacks only tar archives: a compressed file that holds no tar
// archive (data.json.gz) is copied as it is, as Docker copies it.
func TestAddCompressedNonArchive(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"not": "a tar archive"}`))
	zw.Close()
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nADD data.json.gz /data/\n", "data.json.gz": gz.String()})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		if b, err := os.ReadFile(filepath.Join(root, "data/data.json.gz")); err != nil || !bytes.Equal(b, gz.Bytes()) {
			t.Errorf("data/data.json.gz: %d bytes, %v; want the %d bytes of the file as it is", len(b), err, gz.Len())
		}
	})
}

// An ARG given no value (no default, no --build-arg, no value before
// FROM) is unset, as in Docker: ${NAME-word} gives word, and RUN's
// environment has no NAME.
func TestArgWithoutValueIsUnset(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "ARG GLOBAL\nFROM alpine:test\nARG NOVAL\nARG GLOBAL\nENV R=${NOVAL-unset} G=${GLOBAL-unset}\nRUN env > /env.txt\n"})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if env := res.Image.Config.Config.Env; !contains(env, "R=unset") || !contains(env, "G=unset") {
		t.Errorf("Env = %q, want R=unset and G=unset", env)
	}
	inImage(t, res.Image, func(root string) {
		b, err := os.ReadFile(filepath.Join(root, "env.txt"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "NOVAL=") || strings.HasPrefix(line, "GLOBAL=") {
				t.Errorf("RUN's environment has %q", line)
			}
		}
	})
}

// The escape directive changes what the same line means (ENV A=x\$P:
// an escaped dollar, or a backslash and $P expanded): it is part of
// each step's cache key.
func TestCacheSeesEscapeDirective(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nENV P=p\nENV A=x\\$P\n"})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if env := res.Image.Config.Config.Env; !contains(env, "A=x$P") {
		t.Fatalf("Env = %q, want A=x$P", env)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("# escape=`\nFROM alpine:test\nENV P=p\nENV A=x\\$P\n"), 0o644)
	if res, err = build(t, dir, nil); err != nil {
		t.Fatal(err)
	}
	if env := res.Image.Config.Config.Env; !contains(env, `A=x\p`) {
		t.Errorf("Env = %q under escape=`, want A=x\\p (steps %+v)", env, res.Steps)
	}
}

// What .dockerignore leaves out cannot be copied through a link either:
// a link in the context to an ignored file or directory names nothing,
// as in Docker, whose context holds no ignored file for the link to
// reach.
func TestDockerignoreThroughLinks(t *testing.T) {
	dir := writeContext(t, map[string]string{
		".dockerignore": "secret\nprivate\n",
		"secret":        "TOKEN",
		"private/key":   "KEY",
		"public/ok":     "ok",
	})
	for name, target := range map[string]string{"link-secret": "secret", "link-private": "private", "link-abs": "/private/key", "public/up": "../secret"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, src := range []string{"link-secret", "link-private", "link-private/", "link-private/key", "link-abs", "link-s*", "public/up"} {
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM alpine:test\nCOPY "+src+" /x/\n"), 0o644)
		res, err := build(t, dir, nil)
		if !errors.Is(err, ErrNoSource) {
			t.Errorf("COPY %s (a link to what .dockerignore leaves out): %v, want ErrNoSource", src, err)
		}
		if err == nil {
			inImage(t, res.Image, func(root string) {
				filepath.WalkDir(filepath.Join(root, "x"), func(p string, d os.DirEntry, err error) error {
					if b, _ := os.ReadFile(p); d != nil && d.Type().IsRegular() && (string(b) == "TOKEN" || string(b) == "KEY") {
						t.Errorf("COPY %s: %s holds ignored content %q", src, p, b)
					}
					return nil
				})
			})
		}
	}
}

// Below a source, the walk follows no link: a directory it listed and
// then found swapped for a link (to an ignored directory, say) fails
// the walk instead of being read through.
func TestContextWalkFollowsNoLink(t *testing.T) {
	dir := writeContext(t, map[string]string{"private/key": "KEY", "tree/f": "f"})
	if err := os.Symlink("../private", filepath.Join(dir, "tree", "swapped")); err != nil {
		t.Fatal(err)
	}
	c, err := openContext(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.readDir("tree/swapped"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("readDir through a link: %v, want ELOOP", err)
	}
	if _, err := c.openRegular("tree/swapped/key", true); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("reading a file through a link: %v, want ELOOP", err)
	}
	var st unix.Stat_t
	if err := c.lstat("tree/swapped/key", &st); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("lstat through a link: %v, want ELOOP", err)
	}
}

// A file larger than MaxCopySize (a sparse one, all zeros) fails the
// COPY at once, naming the file, before its bytes are staged.
func TestCopyHugeSparseFile(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nCOPY . /app/\n"})
	f, err := os.Create(filepath.Join(dir, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 40)
	f.Close()
	start := time.Now()
	_, err = build(t, dir, func(o *Options) { o.MaxCopySize = 64 << 20 })
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "huge") || lineOf(err) != 2 {
		t.Errorf("COPY of a 1 TiB sparse file under a 64 MiB bound: %v, want ErrTooLarge naming huge on line 2", err)
	}
	t.Logf("failed after %v", time.Since(start))
}

// COPY --from keeps the owners files have in the stage or image, as in
// Docker; files of the context are copied as 0:0 whoever owns them on
// the host; --chown overrides both.
func TestCopyFromKeepsOwners(t *testing.T) {
	dir := writeContext(t, map[string]string{
		"Dockerfile": `FROM alpine:test AS src
COPY --chown=1234:4321 f /out/f
FROM alpine:test
COPY --from=src /out/ /got/
COPY --from=src --chown=7:8 /out/f /chowned
COPY f /fromcontext
`,
		"f": "owned",
	})
	if err := os.Chown(filepath.Join(dir, "f"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inImage(t, res.Image, func(root string) {
		for p, want := range map[string][2]uint32{"got/f": {1234, 4321}, "chowned": {7, 8}, "fromcontext": {0, 0}} {
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(root, p), &st); err != nil {
				t.Error(err)
				continue
			}
			if st.Uid != want[0] || st.Gid != want[1] {
				t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, want[0], want[1])
			}
		}
	})
}

// A FIFO (or a device node) where a regular file is read, the image's
// /etc/passwd for --chown or a context file, is never opened: opening
// it has effects of its own, here letting a writer blocked on the FIFO
// through.
func TestFIFONeverOpened(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	fifo := filepath.Join(dir, "etc", "passwd")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	opened := make(chan struct{}, 1)
	go func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			opened <- struct{}{}
			f.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond) // for the writer to block in its open
	// The writer is let go at the end, by a reader of the test's own.
	defer func() {
		if f, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	}()
	wasOpened := func() bool {
		select {
		case <-opened:
			return true
		case <-time.After(300 * time.Millisecond):
			return false
		}
	}
	root, err := openImageRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.resolveOwner("nobody"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("--chown with the image's /etc/passwd a FIFO: %v, want not a regular file", err)
	}
	if wasOpened() {
		t.Fatal("the image's /etc/passwd, a FIFO, was opened")
	}
	c, err := openContext(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.readFile("etc/passwd", 100); err == nil {
		t.Error("read a FIFO of the context")
	}
	if wasOpened() {
		t.Fatal("a FIFO of the context was opened")
	}
}

// An archive entry ADD skips (named "..") still counts towards the bound:
// a compressed one of any size fails the build once the bound is
// passed, instead of being inflated to its end.
func TestAddBoundedSkippedEntry(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	tw := tar.NewWriter(zw)
	const size = 64 << 20
	if err := tw.WriteHeader(&tar.Header{Name: "..", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(make([]byte, size))
	tw.Close()
	zw.Close()
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nADD bomb.tgz /x/\n", "bomb.tgz": gz.String()})
	_, err := build(t, dir, func(o *Options) { o.MaxCopySize = 1 << 20 })
	if !errors.Is(err, ErrTooLarge) || lineOf(err) != 2 {
		t.Errorf("ADD of an archive with a skipped 64 MiB entry under a 1 MiB bound: %v, want ErrTooLarge on line 2", err)
	}
}

// A COPY stops when the build's context is cancelled, not only once all
// it copies is staged.
func TestCopyCancelled(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nCOPY big /big\n"})
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 40)
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Build(ctx, testEnv.Store, &Options{Context: dir, Cgroups: testEnv.Cgroups, StateDir: testEnv.StateDir, MaxCopySize: 2 << 40})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("COPY of a 1 TiB file with the build cancelled: %v after %v, want DeadlineExceeded", err, time.Since(start))
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("cancelled COPY returned after %v", d)
	}
}

// RUN runs its command alone, as Docker's does, whatever ENTRYPOINT the
// stage has: the entrypoint is the image's, for its sandboxes, not the
// build's. Were it run first, /bin/false would fail the step.
func TestRunIgnoresEntrypoint(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nENTRYPOINT [\"/bin/false\"]\nRUN echo ran > /ran\nRUN [\"sh\", \"-c\", \"cat /ran > /ran2\"]\n"})
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatalf("build with an ENTRYPOINT before RUN: %v", err)
	}
	if ep := res.Image.Config.Config.Entrypoint; !cmp.Equal(ep, []string{"/bin/false"}) {
		t.Errorf("Entrypoint = %q, want [/bin/false]", ep)
	}
}
