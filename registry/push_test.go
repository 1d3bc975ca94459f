package registry

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/layerfs"
)

// importBusybox imports the shared busybox layout into a new store.
func importBusybox(t *testing.T) (*layerfs.Store, *layerfs.Image) {
	t.Helper()
	s := newStore(t)
	img, err := s.Import(context.Background(), sharedImage(t, busyboxLayout), &layerfs.ImportOptions{Name: "busybox:1"})
	if err != nil {
		t.Fatal(err)
	}
	return s, img
}

// progressLog collects Progress reports.
type progressLog struct {
	mu     sync.Mutex
	events []Progress
}

func (l *progressLog) add(p Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, p)
}

// final returns each blob's last report.
func (l *progressLog) final() map[v1.Hash]Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[v1.Hash]Progress{}
	for _, p := range l.events {
		out[p.Blob] = p
	}
	return out
}

// imageBlobs is the config and layer digests of img.
func imageBlobs(img *layerfs.Image) []v1.Hash {
	blobs := []v1.Hash{img.ConfigDigest}
	for _, l := range img.Layers {
		blobs = append(blobs, l.Digest)
	}
	return blobs
}

func TestPushRoundTrip(t *testing.T) {
	reg := startRegistry(t)
	s, img := importBusybox(t)
	ctx := context.Background()
	dest := reg.Host + "/x/busybox:1"

	var log progressLog
	got, err := Push(ctx, s, "busybox:1", dest, &PushOptions{Options: Options{Progress: log.add}})
	if err != nil {
		t.Fatal(err)
	}
	if got != img.Digest {
		t.Errorf("Push returned %s, the store holds %s", got, img.Digest)
	}
	final := log.final()
	for _, b := range imageBlobs(img) {
		p, ok := final[b]
		switch {
		case !ok:
			t.Errorf("no progress for blob %s", b)
		case p.Skipped || !p.Finished || p.Done != p.Total:
			t.Errorf("blob %s ended %+v, want sent and finished", b, p)
		}
	}

	// skopeo reads what berth pushed as the store holds it.
	var inspect struct {
		Digest string
		Layers []string
	}
	if err := json.Unmarshal([]byte(skopeo(t, "inspect", "--tls-verify=false", "docker://"+dest)), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Digest != img.Digest.String() {
		t.Errorf("skopeo sees digest %s, the store %s", inspect.Digest, img.Digest)
	}
	if len(inspect.Layers) != len(img.Layers) || inspect.Layers[0] != img.Layers[0].Digest.String() {
		t.Errorf("skopeo sees layers %v, the store %v", inspect.Layers, img.Layers)
	}

	// And it pulls back, into an empty store, as the same image.
	s2 := newStore(t)
	pulled, err := Pull(ctx, s2, dest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pulled.Digest != img.Digest {
		t.Errorf("pulled %s, pushed %s", pulled.Digest, img.Digest)
	}
}

// TestPushTwiceSkips pushes an image the registry has: to the same tag
// (the remote package finds the manifest and sends nothing) and to
// another (it asks after each blob), and expects every blob Skipped.
func TestPushTwiceSkips(t *testing.T) {
	reg := startRegistry(t)
	s, img := importBusybox(t)
	ctx := context.Background()
	if _, err := Push(ctx, s, "busybox:1", reg.Host+"/x/busybox:1", nil); err != nil {
		t.Fatal(err)
	}
	for _, dest := range []string{reg.Host + "/x/busybox:1", reg.Host + "/x/busybox:2"} {
		var log progressLog
		got, err := Push(ctx, s, "busybox:1", dest, &PushOptions{Options: Options{Progress: log.add}})
		if err != nil {
			t.Fatal(err)
		}
		if got != img.Digest {
			t.Errorf("%s: Push returned %s, want %s", dest, got, img.Digest)
		}
		final := log.final()
		for _, b := range imageBlobs(img) {
			if p := final[b]; !p.Skipped || !p.Finished {
				t.Errorf("%s: blob %s ended %+v, want skipped", dest, b, p)
			}
		}
		for _, p := range log.events {
			if !p.Skipped {
				t.Errorf("%s: blob %s was read (%+v) though the registry has it", dest, p.Blob, p)
			}
		}
	}
}

func TestPushMissingAndUnnamed(t *testing.T) {
	reg := startRegistry(t)
	s, img := importBusybox(t)
	ctx := context.Background()

	_, err := Push(ctx, s, "nothere:1", reg.Host+"/x/nothere:1", nil)
	if !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("push of a missing image: %v, want ErrNotFound", err)
	}
	_, err = Push(ctx, s, "nothere:1", "", nil)
	if !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("push of a missing image with no destination: %v, want ErrNotFound", err)
	}
	// busybox:1 names no registry: without a destination it goes
	// nowhere, rather than to Docker Hub.
	_, err = Push(ctx, s, "busybox:1", "", nil)
	if !errors.Is(err, ErrNoDestination) {
		t.Errorf("push of busybox:1 with no destination: %v, want ErrNoDestination", err)
	}
	// A name with a registry is its own destination, also when the
	// image is given by digest.
	if err := s.Tag(ctx, "busybox:1", reg.Host+"/y/busybox:3"); err != nil {
		t.Fatal(err)
	}
	got, err := Push(ctx, s, img.Digest.String(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != img.Digest {
		t.Errorf("Push returned %s, want %s", got, img.Digest)
	}
	skopeo(t, "inspect", "--tls-verify=false", "docker://"+reg.Host+"/y/busybox:3")

	// A destination pinned to another digest is refused before anything
	// is sent.
	other := "sha256:" + strings.Repeat("0", 64)
	_, err = Push(ctx, s, "busybox:1", reg.Host+"/z/busybox@"+other, nil)
	if !errors.Is(err, layerfs.ErrDigestMismatch) {
		t.Errorf("push to a digest the image does not have: %v, want ErrDigestMismatch", err)
	}
	if _, err := Push(ctx, s, "busybox:1", reg.Host+"/z/busybox@"+img.Digest.String(), nil); err != nil {
		t.Errorf("push to the image's own digest: %v", err)
	}
}

// TestV1ImageSurvivesGC removes the image and collects garbage while a
// V1Image of it is open: the push still reads every blob.
func TestV1ImageSurvivesGC(t *testing.T) {
	reg := startRegistry(t)
	s, img := importBusybox(t)
	ctx := context.Background()
	v, err := s.V1Image(ctx, "busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := s.Remove(ctx, "busybox:1"); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs == 0 {
		t.Fatalf("GC removed no blob (%+v): the test proves nothing", res)
	}
	layers, err := v.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h, _, err := v1.SHA256(rc)
	if err != nil {
		t.Fatalf("reading a layer after GC: %v", err)
	}
	if h != img.Layers[0].Digest {
		t.Errorf("layer read back as %s, want %s", h, img.Layers[0].Digest)
	}
	_ = reg
}

// htpasswdEntry is user:password for the authenticated registry's
// htpasswd file; bcrypt is the only hash the registry accepts.
func htpasswdEntry(t *testing.T, user, password string) string {
	t.Helper()
	return user + ":" + bcryptHash(t, password) + "\n"
}

func TestLoginPushLogout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers needs root")
	}
	const user, password = "berth", "s3cret-Pa55"
	configDir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", configDir)
	reg := registrytest.Start(t, &registrytest.Options{Htpasswd: htpasswdEntry(t, user, password)})
	s, img := importBusybox(t)
	ctx := context.Background()
	dest := reg.Host + "/x/busybox:1"
	configPath := filepath.Join(configDir, "config.json")

	// No credentials: the registry refuses the push.
	_, err := Push(ctx, s, "busybox:1", dest, nil)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("push without login: %v, want ErrUnauthorized", err)
	}

	// A wrong password is refused and nothing is written.
	err = Login(ctx, reg.Host, user, "wrong-"+password, nil)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("login with a wrong password: %v, want ErrUnauthorized", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("the error holds the password: %v", err)
	}
	if _, err := os.Stat(configPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused login left %s (%v)", configPath, err)
	}

	// An existing config.json others can read: login makes it theirs
	// no more, and keeps what else it held.
	if err := os.WriteFile(configPath, []byte(`{"auths":{},"psFormat":"table {{.ID}}"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Login(ctx, reg.Host, user, password, nil); err != nil {
		t.Fatalf("login: %v", err)
	}
	fi, err := os.Stat(configPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config.json has mode %v, want 0600", fi.Mode().Perm())
	}
	var cfg struct {
		Auths    map[string]struct{ Auth string }
		PsFormat string
	}
	b, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Auths[reg.Host].Auth == "" {
		t.Errorf("config.json has no credentials for %s: %s", reg.Host, b)
	}
	if cfg.PsFormat != "table {{.ID}}" {
		t.Errorf("login lost the file's other settings: %s", b)
	}
	entries, _ := os.ReadDir(configDir)
	if len(entries) != 1 {
		t.Errorf("the config directory holds %d files, want config.json alone", len(entries))
	}

	// Push finds the credentials there.
	got, err := Push(ctx, s, "busybox:1", dest, nil)
	if err != nil {
		t.Fatalf("push after login: %v", err)
	}
	if got != img.Digest {
		t.Errorf("Push returned %s, want %s", got, img.Digest)
	}

	// Logout forgets them; a second one says there was nothing to forget.
	if err := Logout(reg.Host, nil); err != nil {
		t.Fatalf("logout: %v", err)
	}
	b, err = os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), reg.Host) {
		t.Errorf("config.json still names %s after logout: %s", reg.Host, b)
	}
	if err := Logout(reg.Host, nil); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("second logout: %v, want ErrNotLoggedIn", err)
	}
	// An entry as older Docker versions filed it, under a URL, is the
	// same server's.
	legacy := `{"auths":{"https://` + reg.Host + `/v1/":{"auth":"eDp5"}}}`
	if err := os.WriteFile(configPath, []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Logout(reg.Host, nil); err != nil {
		t.Errorf("logout of a URL entry: %v", err)
	}
	if b, _ := os.ReadFile(configPath); strings.Contains(string(b), reg.Host) {
		t.Errorf("config.json still names %s after logout: %s", reg.Host, b)
	}
	if _, err := Push(ctx, s, "busybox:1", reg.Host+"/x/busybox:2", nil); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("push after logout: %v, want ErrUnauthorized", err)
	}
}

// TestLoginConfigDir keeps credentials in the directory Options names,
// and Push reads them from there.
func TestLoginConfigDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers needs root")
	}
	const user, password = "berth", "another-s3cret"
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // not to be used
	reg := registrytest.Start(t, &registrytest.Options{Htpasswd: htpasswdEntry(t, user, password)})
	s, _ := importBusybox(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "docker")
	opts := Options{ConfigDir: dir}
	if err := Login(ctx, reg.Host, user, password, &opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("login wrote $DOCKER_CONFIG though Options.ConfigDir was set (%v)", err)
	}
	if _, err := Push(ctx, s, "busybox:1", reg.Host+"/x/busybox:1", &PushOptions{Options: opts}); err != nil {
		t.Fatalf("push with Options.ConfigDir: %v", err)
	}
	if err := Logout(reg.Host, &opts); err != nil {
		t.Fatal(err)
	}
}

func TestParseServer(t *testing.T) {
	for in, want := range map[string]server{
		"":                              {host: "index.docker.io", key: dockerHubKey},
		"docker.io":                     {host: "index.docker.io", key: dockerHubKey},
		"index.docker.io":               {host: "index.docker.io", key: dockerHubKey},
		"registry-1.docker.io":          {host: "index.docker.io", key: dockerHubKey},
		"https://index.docker.io/v1/":   {host: "index.docker.io", key: dockerHubKey},
		"127.0.0.1:5000":                {host: "127.0.0.1:5000", key: "127.0.0.1:5000"},
		"https://registry.example/v2/":  {host: "registry.example", key: "registry.example"},
		"http://registry.example:8080/": {host: "registry.example:8080", key: "registry.example:8080"},
	} {
		got, err := parseServer(in)
		if err != nil || got != want {
			t.Errorf("parseServer(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := parseServer("not a host"); err == nil {
		t.Error("parseServer took a name with spaces")
	}
}

// TestPushDamagedBlob pushes an image whose layer blob changed in the
// store: the push fails with ErrDigestMismatch, and the registry is left
// without the image.
func TestPushDamagedBlob(t *testing.T) {
	reg := startRegistry(t)
	s, img := importBusybox(t)
	p := s.BlobPath(img.Layers[0].Digest)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dest := reg.Host + "/x/busybox:1"
	_, err = Push(context.Background(), s, "busybox:1", dest, nil)
	if !errors.Is(err, layerfs.ErrDigestMismatch) {
		t.Fatalf("push of a damaged blob: %v, want ErrDigestMismatch", err)
	}
	out, err := exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+dest).CombinedOutput()
	if err == nil {
		t.Errorf("the registry holds the image after a failed push: %s", out)
	}
}

// TestLoginCredentialHelper names a credential helper in config.json
// (credHelpers): Login stores the password there and not in the file,
// Push reads it back through the helper, Logout erases it.
func TestLoginCredentialHelper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers needs root")
	}
	const user, password = "berth", "helper-s3cret"
	configDir, helperDir := t.TempDir(), t.TempDir()
	t.Setenv("DOCKER_CONFIG", configDir)
	// A helper that keeps one server's credentials in a file, speaking
	// the docker-credential-helpers protocol.
	script := `#!/bin/sh
f=` + helperDir + `/creds.json
case "$1" in
store) cat > "$f" ;;
get) cat > /dev/null; if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
erase) cat > /dev/null; rm -f "$f" ;;
list) echo '{}' ;;
esac
`
	if err := os.WriteFile(filepath.Join(helperDir, "docker-credential-berthtest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", helperDir+":"+os.Getenv("PATH"))
	reg := registrytest.Start(t, &registrytest.Options{Htpasswd: htpasswdEntry(t, user, password)})
	configPath := filepath.Join(configDir, "config.json")
	if err := os.WriteFile(configPath, []byte(`{"credHelpers":{"`+reg.Host+`":"berthtest"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := importBusybox(t)
	ctx := context.Background()

	if err := Login(ctx, reg.Host, user, password, nil); err != nil {
		t.Fatalf("login: %v", err)
	}
	b, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"auth"`) {
		t.Errorf("config.json holds credentials though a helper keeps them: %s", b)
	}
	held, err := os.ReadFile(filepath.Join(helperDir, "creds.json"))
	if err != nil || !strings.Contains(string(held), password) {
		t.Fatalf("the helper holds %q (%v), want the password", held, err)
	}
	if _, err := Push(ctx, s, "busybox:1", reg.Host+"/x/busybox:1", nil); err != nil {
		t.Fatalf("push with the helper's credentials: %v", err)
	}
	if err := Logout(reg.Host, nil); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if _, err := os.Stat(filepath.Join(helperDir, "creds.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("logout left the helper's credentials (%v)", err)
	}
}

// TestPushCancel cancels a push as its first bytes go: Push returns the
// context's error and keeps no blob of the store open.
func TestPushCancel(t *testing.T) {
	reg := startRegistry(t)
	s, _ := importBusybox(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := func(p Progress) {
		if p.Done > 0 && !p.Skipped {
			cancel()
		}
	}
	_, err := Push(ctx, s, "busybox:1", reg.Host+"/x/busybox:1", &PushOptions{Options: Options{Progress: progress}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled push: %v, want context.Canceled", err)
	}
	if open := openFilesUnder(t, s.Root()); len(open) > 0 {
		t.Errorf("after a cancelled push, the store's files are still open: %v", open)
	}
	// And the next push succeeds.
	if _, err := Push(context.Background(), s, "busybox:1", reg.Host+"/x/busybox:1", nil); err != nil {
		t.Fatal(err)
	}
}

// openFilesUnder lists this process's open files under dir, the store's
// lock file aside.
func openFilesUnder(t *testing.T, dir string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") && !strings.HasSuffix(target, ".lock") {
			open = append(open, target)
		}
	}
	return open
}

// TestPushDockerSchema2 pushes an image whose manifest is Docker's
// schema 2, not OCI: it goes out as it came, with its media type.
func TestPushDockerSchema2(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	want := pushBusybox(t, reg, "src/busybox:v2s2", "--format", "v2s2")
	s := newStore(t)
	img, err := Pull(ctx, s, reg.Host+"/src/busybox:v2s2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest.String() != want || !strings.Contains(string(img.MediaType), "docker") {
		t.Fatalf("pulled %s (%s), want %s, a Docker manifest", img.Digest, img.MediaType, want)
	}
	dest := reg.Host + "/dst/busybox:1"
	got, err := Push(ctx, s, reg.Host+"/src/busybox:v2s2", dest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != want {
		t.Errorf("pushed %s, want %s", got, want)
	}
	var m struct{ MediaType string }
	if err := json.Unmarshal([]byte(skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+dest)), &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != string(img.MediaType) {
		t.Errorf("the registry holds a %s manifest, want %s", m.MediaType, img.MediaType)
	}
}

// TestLoginRefusesForeignSymlink plants config.json as a symlink owned by
// another user: root's login does not write through it.
func TestLoginRefusesForeignSymlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a symlink another user owns")
	}
	const user, password = "berth", "s3cret"
	configDir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	// Any file that parses as JSON: a config of some service.
	if err := os.WriteFile(victim, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(configDir, "config.json")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	reg := registrytest.Start(t, &registrytest.Options{Htpasswd: htpasswdEntry(t, user, password)})
	err := Login(context.Background(), reg.Host, user, password, &Options{ConfigDir: configDir})
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("login through another user's symlink: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "{}\n" {
		t.Errorf("the file the symlink names was overwritten: %q", b)
	}
}
