// Package registrytest runs the reference registry (Debian's
// docker-registry, the CNCF distribution registry) on 127.0.0.1 for
// tests, with storage in a temporary directory that goes with it.
package registrytest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry's command, as Debian installs it.
const Binary = "/usr/bin/docker-registry"

// A Registry is a running registry, stopped when its test ends.
type Registry struct {
	// Host is its address, 127.0.0.1:PORT, the registry part of the
	// references that name images in it.
	Host string
	// Dir holds its storage.
	Dir string

	cmd  *exec.Cmd
	done chan struct{}
}

// Options tune Start; the zero value is ready to use.
type Options struct {
	// Htpasswd, if set, is the content of an htpasswd file (bcrypt
	// entries) that the registry requires basic authentication against.
	Htpasswd string
}

// Start starts a registry for t, or skips t if the registry is not
// installed. It returns once the registry answers.
func Start(t testing.TB, opts *Options) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Skipf("the reference registry is not installed (apt-get install docker-registry): %v", err)
	}
	if opts == nil {
		opts = &Options{}
	}
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &Registry{Host: "127.0.0.1:" + strconv.Itoa(port), Dir: filepath.Join(dir, "storage"), done: make(chan struct{})}
	auth := ""
	if opts.Htpasswd != "" {
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(opts.Htpasswd), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: berth-test\n    path: %s\n", pw)
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
%s`, r.Dir, r.Host, auth)
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	r.cmd = exec.Command(Binary, "serve", cfg)
	r.cmd.Stdout, r.cmd.Stderr = log, log
	// The registry must not outlive the test binary.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(r.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.waitReady(ctx); err != nil {
		b, _ := os.ReadFile(log.Name())
		t.Fatalf("registry on %s: %v\n%s", r.Host, err, b)
	}
	return r
}

// waitReady waits until the registry answers GET /v2/ (with 200, or 401
// when it wants credentials).
func (r *Registry) waitReady(ctx context.Context) error {
	for {
		select {
		case <-r.done:
			return errors.New("the registry exited")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Host+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering: %w (last: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the registry and waits for it. It may be called more than
// once; the test's cleanup calls it too.
func (r *Registry) Stop() {
	if r.cmd.Process != nil {
		r.cmd.Process.Kill()
	}
	<-r.done
}

// freePort returns a TCP port on 127.0.0.1 that nothing listened on a
// moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// HtpasswdEntry is the line of an htpasswd file (Options.Htpasswd) that
// lets user in with password; bcrypt is the only hash the registry takes.
func HtpasswdEntry(t testing.TB, user, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(h) + "\n"
}

// Skopeo runs skopeo with args and fails t if it fails; it returns what
// skopeo wrote.
func Skopeo(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("skopeo", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Copy puts the image tag of the OCI layout in the directory layout into
// the registry as repo (repository:tag), with skopeo (extra are more of
// its copy flags), and returns the digest of the manifest the registry
// holds.
func (r *Registry) Copy(t testing.TB, layout, tag, repo string, extra ...string) string {
	t.Helper()
	args := append([]string{"copy", "--quiet", "--dest-tls-verify=false"}, extra...)
	args = append(args, "oci:"+layout+":"+tag, "docker://"+r.Host+"/"+repo)
	Skopeo(t, args...)
	return r.Digest(t, repo)
}

// Digest is the digest of the manifest the registry serves for repo,
// hashed here from skopeo's raw copy of it.
func (r *Registry) Digest(t testing.TB, repo string) string {
	t.Helper()
	raw := Skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+r.Host+"/"+repo)
	sum := sha256.Sum256([]byte(raw))
	return "sha256:" + hex.EncodeToString(sum[:])
}
