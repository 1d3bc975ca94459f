package registry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/berth-dev/berth/layerfs"
)

// fakeNetwork is a transport that answers for a registry itself, sending
// nothing anywhere, and records every request it is given. serve, if
// set, answers; otherwise every request fails as an unreachable host
// would.
type fakeNetwork struct {
	mu    sync.Mutex
	seen  []string // method and URL of each request
	serve func(*http.Request) *http.Response
}

func (f *fakeNetwork) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.seen = append(f.seen, req.URL.Scheme+"://"+req.URL.Host+req.URL.Path)
	f.mu.Unlock()
	if f.serve == nil {
		return nil, errors.New("fake network: host unreachable")
	}
	resp := f.serve(req)
	resp.Request = req
	return resp, nil
}

func (f *fakeNetwork) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func response(status int, body io.Reader, length int64, header ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(body), ContentLength: length, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}

func fakeOptions(f *fakeNetwork, insecure bool) *PullOptions {
	return &PullOptions{Options: Options{Transport: f, Insecure: insecure, Keychain: authn.NewMultiKeychain()}}
}

// TestPullPrivateAddressUsesHTTPS pulls from a registry on a private
// address, for which the remote package would use plain HTTP: every
// request berth lets out is HTTPS.
func TestPullPrivateAddressUsesHTTPS(t *testing.T) {
	f := &fakeNetwork{}
	_, err := Pull(context.Background(), newStoreNoRoot(t), "192.168.77.1:5000/team/app:1", fakeOptions(f, false))
	if err == nil {
		t.Fatal("pull through an unreachable network succeeded")
	}
	seen := f.requests()
	if len(seen) == 0 {
		t.Fatal("no request was made")
	}
	for _, r := range seen {
		if !strings.HasPrefix(r, "https://") {
			t.Errorf("request went out as %s", r)
		}
	}
}

// TestPullInsecureAllowsHTTP marks the same registry insecure: plain HTTP
// is then tried.
func TestPullInsecureAllowsHTTP(t *testing.T) {
	f := &fakeNetwork{}
	Pull(context.Background(), newStoreNoRoot(t), "192.168.77.1:5000/team/app:1", fakeOptions(f, true))
	for _, r := range f.requests() {
		if strings.HasPrefix(r, "http://") {
			return
		}
	}
	t.Errorf("an insecure registry was never asked over plain HTTP: %q", f.requests())
}

// TestPullRefusesRedirectToPlainHTTP has a registry redirect its manifest
// to a plain-HTTP URL elsewhere: the redirect is refused before it is
// sent.
func TestPullRefusesRedirectToPlainHTTP(t *testing.T) {
	f := &fakeNetwork{serve: func(req *http.Request) *http.Response {
		switch {
		case req.URL.Host != "registry.example":
			return response(http.StatusOK, strings.NewReader("{}"), 2)
		case req.URL.Path == "/v2/":
			return response(http.StatusOK, strings.NewReader(""), 0)
		default:
			return response(http.StatusTemporaryRedirect, strings.NewReader(""), 0, "Location", "http://blobs.example/manifest")
		}
	}}
	_, err := Pull(context.Background(), newStoreNoRoot(t), "registry.example/team/app:1", fakeOptions(f, false))
	if !errors.Is(err, ErrPlainHTTP) || !strings.Contains(err.Error(), "insecure") {
		t.Fatalf("pull redirected to plain HTTP: %v, want ErrPlainHTTP saying how to allow it", err)
	}
	for _, r := range f.requests() {
		if strings.HasPrefix(r, "http://") {
			t.Errorf("request went out as %s", r)
		}
	}
}

// TestPullBoundsManifest has a registry send a manifest of 5 MiB with no
// length given: berth stops reading at its bound.
func TestPullBoundsManifest(t *testing.T) {
	for _, length := range []int64{-1, 5 << 20} {
		f := &fakeNetwork{serve: func(req *http.Request) *http.Response {
			if req.URL.Path == "/v2/" {
				return response(http.StatusOK, strings.NewReader(""), 0)
			}
			return response(http.StatusOK, io.LimitReader(zeros{}, 5<<20), length, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
		}}
		_, err := Pull(context.Background(), newStoreNoRoot(t), "registry.example/team/app:1", fakeOptions(f, false))
		if err == nil || !strings.Contains(err.Error(), "more than the 4194304 berth reads") && !strings.Contains(err.Error(), "longer than the 4194304 bytes berth reads") {
			t.Errorf("length %d: pull of a 5 MiB manifest: %v, want it refused while it is read, at 4 MiB", length, err)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestUnverifiedTLSOnlyForTheRegistry runs a loopback registry with a
// certificate nobody signed, which berth accepts, that redirects to
// another such server, which berth must verify and so refuse.
func TestUnverifiedTLSOnlyForTheRegistry(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer other.Close()
	var manifestAsked atomic.Int32
	reg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		manifestAsked.Add(1)
		http.Redirect(w, r, other.URL+"/manifest", http.StatusTemporaryRedirect)
	}))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "https://")
	_, err := Pull(context.Background(), newStoreNoRoot(t), host+"/team/app:1", nil)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("pull redirected to an unverifiable server: %v, want a certificate error", err)
	}
	if manifestAsked.Load() == 0 {
		t.Error("the loopback registry's own unverified certificate was refused")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the server redirected to got %d requests over unverified TLS", n)
	}
}

// TestPullBoundsRedirectedManifest has the registry redirect its
// manifest elsewhere, which then sends 5 MiB: the bound on manifests
// holds wherever the request was sent.
func TestPullBoundsRedirectedManifest(t *testing.T) {
	f := &fakeNetwork{serve: func(req *http.Request) *http.Response {
		switch {
		case req.URL.Path == "/v2/":
			return response(http.StatusOK, strings.NewReader(""), 0)
		case req.URL.Host == "registry.example":
			return response(http.StatusTemporaryRedirect, strings.NewReader(""), 0, "Location", "https://cdn.example/object/1")
		}
		return response(http.StatusOK, io.LimitReader(zeros{}, 5<<20), -1, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
	}}
	_, err := Pull(context.Background(), newStoreNoRoot(t), "registry.example/team/app:1", fakeOptions(f, false))
	if err == nil || !strings.Contains(err.Error(), "longer than the 4194304 bytes berth reads") {
		t.Errorf("pull of a 5 MiB manifest from where the registry redirected: %v, want it refused while it is read, at 4 MiB", err)
	}
	if reqs := f.requests(); !slices.Contains(reqs, "https://cdn.example/object/1") {
		t.Errorf("the redirect was not followed: requests %v", reqs)
	}
}

// TestManifestBoundByPath reads a 5 MiB blob of a repository called
// team/manifests/app, which is no manifest, and a manifest of it, which
// is bounded.
func TestManifestBoundByPath(t *testing.T) {
	f := &fakeNetwork{serve: func(req *http.Request) *http.Response {
		return response(http.StatusOK, io.LimitReader(zeros{}, 5<<20), -1)
	}}
	tr := (&Options{Transport: f}).transport(name.MustParseReference("registry.example/team/manifests/app:1").Context().Registry)
	get := func(path string) (int64, error) {
		req, err := http.NewRequest(http.MethodGet, "https://registry.example"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return io.Copy(io.Discard, resp.Body)
	}
	blob := "/v2/team/manifests/app/blobs/sha256:" + strings.Repeat("0", 64)
	if n, err := get(blob); err != nil || n != 5<<20 {
		t.Errorf("GET %s: %d bytes, %v; want all 5 MiB of the blob", blob, n, err)
	}
	manifest := "/v2/team/manifests/app/manifests/1"
	if _, err := get(manifest); err == nil || !strings.Contains(err.Error(), "longer than the 4194304 bytes berth reads") {
		t.Errorf("GET %s of 5 MiB: %v, want it cut off at 4 MiB", manifest, err)
	}
}

// TestPullClosesConnections pulls from a loopback registry that has no
// such image: once Pull returns, no connection berth opened to it stays
// open (idle in a pool no one will use again).
func TestPullClosesConnections(t *testing.T) {
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch st {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	srv.Start()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	_, err := Pull(context.Background(), newStoreNoRoot(t), host+"/team/app:1", &PullOptions{Options: Options{Keychain: authn.NewMultiKeychain()}})
	if !errors.Is(err, layerfs.ErrNotFound) {
		t.Fatalf("pull of an image the registry lacks: %v, want ErrNotFound", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(open)
		mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to the registry still open after Pull returned", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPullBoundsPing has a registry answer GET /v2/ with a body that
// never ends, which the remote package reads to its end: berth stops
// reading it, and the pull goes on to find the image missing.
func TestPullBoundsPing(t *testing.T) {
	f := &fakeNetwork{serve: func(req *http.Request) *http.Response {
		if req.URL.Path == "/v2/" {
			return response(http.StatusOK, zeros{}, -1)
		}
		return response(http.StatusNotFound, strings.NewReader(`{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`), -1)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Pull(ctx, newStoreNoRoot(t), "registry.example/team/app:1", fakeOptions(f, false))
	if !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("pull from a registry whose /v2/ never ends: %v, want ErrNotFound", err)
	}
}
