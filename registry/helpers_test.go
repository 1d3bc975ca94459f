package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/layerfs"
)

// busyboxLayout is the shared busybox OCI layout and the name its index
// gives the image.
const (
	busyboxLayout = "busybox-1.38-musl-oci"
	busyboxTag    = "busybox:1.38.0-musl"
	busyboxLayer  = "sha256:5c3b447848a98e48dce106cb3e6acbd4fb6f9b26ee778798137349ce01f4d3c1"
)

func sharedImage(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "shared", "images", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test image %s is missing: the tests need ../shared/images beside the repository", p)
	}
	return p
}

// startRegistry starts a registry for t, with Docker's configuration in
// a directory of t's so that the host's is never read.
func startRegistry(t *testing.T) *registrytest.Registry {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers needs root")
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	return registrytest.Start(t, nil)
}

// skopeo runs skopeo with args and fails t if it fails.
func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("skopeo", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pushBusybox copies the shared busybox layout into reg as repo:tag
// (extra are more skopeo copy flags) and returns the digest of the
// manifest the registry holds.
func pushBusybox(t *testing.T, reg *registrytest.Registry, dest string, extra ...string) string {
	t.Helper()
	args := append([]string{"copy", "--quiet", "--dest-tls-verify=false"}, extra...)
	args = append(args, "oci:"+sharedImage(t, busyboxLayout)+":"+busyboxTag, "docker://"+reg.Host+"/"+dest)
	skopeo(t, args...)
	raw := skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+reg.Host+"/"+dest)
	sum := sha256.Sum256([]byte(raw))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func newStore(t *testing.T) *layerfs.Store {
	t.Helper()
	s, err := layerfs.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertStoreEmpty fails t unless s holds no image and its staging area
// is empty.
func assertStoreEmpty(t *testing.T, s *layerfs.Store) {
	t.Helper()
	imgs, err := s.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 0 {
		t.Errorf("store holds %d images, want none", len(imgs))
	}
	assertNoStaging(t, s)
}

func assertNoStaging(t *testing.T, s *layerfs.Store) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("staging area holds %s", e.Name())
	}
}

// A proxy stands between berth and a registry, counting the blobs it
// serves and, when told to, cutting the connection part-way through one.
type proxy struct {
	Host     string // 127.0.0.1:PORT
	upstream string

	mu        sync.Mutex
	blobGets  map[string]int // by digest
	cutAfter  int64          // cut blob responses after this many bytes; 0 for never
	cutDigest string
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{Host: l.Addr().String(), upstream: upstream, blobGets: map[string]int{}}
	srv := &http.Server{Handler: p}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p
}

func (p *proxy) blobGetCount(digest string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blobGets[digest]
}

// cut makes the proxy cut the connection after n bytes of blob digest.
func (p *proxy) cut(digest string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutDigest, p.cutAfter = digest, n
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	req.ContentLength = r.ContentLength
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	var limit int64 = -1
	if i := strings.Index(r.URL.Path, "/blobs/"); i >= 0 && r.Method == http.MethodGet {
		digest := r.URL.Path[i+len("/blobs/"):]
		p.mu.Lock()
		p.blobGets[digest]++
		if digest == p.cutDigest && p.cutAfter > 0 {
			limit = p.cutAfter
		}
		p.mu.Unlock()
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	if limit < 0 {
		io.Copy(w, resp.Body)
		return
	}
	io.CopyN(w, resp.Body, limit)
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler) // drops the connection mid-body
}

// newStoreNoRoot is a store for tests that never unpack a layer.
func newStoreNoRoot(t *testing.T) *layerfs.Store {
	t.Helper()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	return newStore(t)
}
