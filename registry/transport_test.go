package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
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
