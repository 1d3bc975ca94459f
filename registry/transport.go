package registry

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// maxManifestSize bounds a manifest or index read from a registry. The
// remote package allows 100 MiB, which a hostile registry could make
// berth hold in memory for every request; real manifests are a few
// kilobytes, and the store's own bound on manifests in archives is the
// same 4 MiB.
const maxManifestSize = 4 << 20

// maxPingSize bounds what berth reads of the registry's answer to
// GET /v2/, whose body says nothing ("{}"): the remote package reads it to
// its end, which a registry sending without end would make last forever.
const maxPingSize = 64 << 10

// isLoopback tells whether host (a registry's host[:port]) is on the
// loopback interface by its name alone: localhost, 127.0.0.0/8 or ::1.
// Names are not resolved: what a name resolves to can change between the
// check and the dial.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// plainHTTPAllowed tells whether berth may talk plain HTTP, or TLS
// without verification, to reg.
func (o *Options) plainHTTPAllowed(reg name.Registry) bool {
	return o.Insecure || isLoopback(reg.RegistryStr())
}

// transport returns what carries the requests to reg: the caller's
// Transport or a clone of http.DefaultTransport (skipping TLS
// verification when reg may be insecure), behind berth's rules on plain
// HTTP.
//
// Only the registry itself goes unverified: a host it redirects to (a
// blob store, a token server) is verified as any other.
//
// The caller must call closeIdle once the operation is done.
func (o *Options) transport(reg name.Registry) *guardedTransport {
	g := &guardedTransport{inner: o.Transport, registry: reg.RegistryStr(), plainHTTP: o.plainHTTPAllowed(reg)}
	if g.inner == nil {
		g.own = true
		g.inner = http.DefaultTransport.(*http.Transport).Clone()
		if g.plainHTTP {
			t := http.DefaultTransport.(*http.Transport).Clone()
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
			g.registryInner = t
		}
	}
	return g
}

// guardedTransport enforces berth's rules on what goes to a registry,
// below the remote package's own transports (authentication, retries)
// so that it sees every request, redirects included:
//
//   - Plain HTTP goes only to the registry itself, and only when it is on
//     the loopback interface or marked Insecure. The remote package would
//     also use it for registries on private (RFC 1918) addresses and
//     names ending .local; their requests are sent over HTTPS instead, as
//     for any other registry. A plain-HTTP request to any other host (a
//     redirect to a blob store, a token realm) is refused before it is
//     dialled, with ErrPlainHTTP.
//   - A manifest response is read to at most maxManifestSize bytes,
//     wherever the registry redirected its request, and the answer to
//     GET /v2/ to at most maxPingSize.
type guardedTransport struct {
	inner         http.RoundTripper
	registryInner http.RoundTripper // for the registry itself, if not inner
	registry      string            // host[:port] as references name it
	plainHTTP     bool
	own           bool // inner and registryInner were made for this operation
}

// closeIdle closes the idle connections of the transports made for one
// operation, which no later one uses: left open, each would hold a
// socket and two goroutines for the idle timeout (90 s) after Pull, Push
// or Login returned. A caller's Options.Transport is left alone.
func (t *guardedTransport) closeIdle() {
	if !t.own {
		return
	}
	for _, rt := range []http.RoundTripper{t.inner, t.registryInner} {
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}

func (t *guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		sameHost := strings.EqualFold(req.URL.Host, t.registry)
		switch {
		case sameHost && t.plainHTTP:
		case sameHost:
			// The remote package's guess for a private address;
			// such a registry speaks HTTPS like any other.
			req = req.Clone(req.Context())
			req.URL.Scheme = "https"
			req.Host = ""
		default:
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, fmt.Errorf("%s %s: %w: registry %s is not on the loopback interface; mark it insecure (Options.Insecure, berth --insecure) to allow plain HTTP", req.Method, redactedURL(req), ErrPlainHTTP, t.registry)
		}
	}
	inner := t.inner
	if t.registryInner != nil && strings.EqualFold(req.URL.Host, t.registry) {
		inner = t.registryInner
	}
	resp, err := inner.RoundTrip(req)
	switch {
	case err != nil:
		return resp, err
	case req.Method == http.MethodGet && req.URL.Path == "/v2/":
		resp.Body = &cappedBody{ReadCloser: resp.Body, left: maxPingSize, max: maxPingSize, what: "answer to /v2/", url: redactedURL(req)}
	case fetchesManifest(req):
		if resp.ContentLength > maxManifestSize {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: manifest of %d bytes, more than the %d berth reads", redactedURL(req), resp.ContentLength, maxManifestSize)
		}
		resp.Body = &cappedBody{ReadCloser: resp.Body, left: maxManifestSize, max: maxManifestSize, what: "manifest", url: redactedURL(req)}
	}
	return resp, nil
}

// fetchesManifest tells whether req asks for a manifest: a GET of
// /v2/NAME/manifests/REFERENCE, or a request a redirect of one led to,
// wherever it goes. By the path's last components, not by a
// "/manifests/" anywhere in it: a repository may be called
// team/manifests/app, and its blobs must not be bounded as manifests.
func fetchesManifest(req *http.Request) bool {
	first := req
	for first.Response != nil && first.Response.Request != nil {
		first = first.Response.Request
	}
	p := first.URL.Path
	return req.Method == http.MethodGet && first.Method == http.MethodGet &&
		strings.HasPrefix(p, "/v2/") && path.Base(path.Dir(p)) == "manifests"
}

// redactedURL is req's URL without query (which may hold signed
// credentials, as blob-store redirects do) or user information.
func redactedURL(req *http.Request) string {
	u := *req.URL
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// cappedBody is a response body that fails once more than left bytes
// have been read from it, rather than ending quietly as io.LimitReader
// would: a manifest cut short must not look complete.
type cappedBody struct {
	io.ReadCloser
	left, max int64
	what      string // what the body is, for the error
	url       string
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, err := io.ReadFull(b.ReadCloser, one[:]); n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("GET %s: %s longer than the %d bytes berth reads", b.url, b.what, b.max)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
