package registry

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// maxManifestSize bounds a manifest or index read from a registry. The
// remote package allows 100 MiB, which a hostile registry could make
// berth hold in memory for every request; real manifests are a few
// kilobytes, and the store's own bound on manifests in archives is the
// same 4 MiB.
const maxManifestSize = 4 << 20

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
func (o *Options) transport(reg name.Registry) http.RoundTripper {
	g := &guardedTransport{inner: o.Transport, registry: reg.RegistryStr(), plainHTTP: o.plainHTTPAllowed(reg)}
	if g.inner == nil {
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
//   - A manifest response is read to at most maxManifestSize bytes.
type guardedTransport struct {
	inner         http.RoundTripper
	registryInner http.RoundTripper // for the registry itself, if not inner
	registry      string            // host[:port] as references name it
	plainHTTP     bool
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
	if err != nil || !strings.Contains(req.URL.Path, "/manifests/") || req.Method != http.MethodGet {
		return resp, err
	}
	if resp.ContentLength > maxManifestSize {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: manifest of %d bytes, more than the %d berth reads", redactedURL(req), resp.ContentLength, maxManifestSize)
	}
	resp.Body = &cappedBody{ReadCloser: resp.Body, left: maxManifestSize, url: redactedURL(req)}
	return resp, nil
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
	left int64
	url  string
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, err := io.ReadFull(b.ReadCloser, one[:]); n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("GET %s: manifest longer than the %d bytes berth reads", b.url, maxManifestSize)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
