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

	"github.com/berth-dev/berth/internal/testenv"
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
