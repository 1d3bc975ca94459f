package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
)

// ErrNotReady means a readiness check failed: the service did not become
// ready in time, its check said it never will (an unhealthy HEALTHCHECK),
// or the workload ended first. A Start that fails with it has killed and
// torn down the sandbox; Wait returns how the workload ended.
var ErrNotReady = errors.New("sandbox not ready")

// DefaultReadyTimeout is Options.ReadyTimeout's default.
const DefaultReadyTimeout = time.Minute

// Defaults of the checks' per-attempt timeouts and intervals.
const (
	defaultProbeInterval = 100 * time.Millisecond
	defaultProbeTimeout  = 2 * time.Second
	// maxProbeBody is how much of an HTTP response's body is read, and
	// matched against HTTPCheck.Body.
	maxProbeBody = 4 << 10
	// maxProbeHeader bounds an HTTP response's header.
	maxProbeHeader = 16 << 10
)

// A ReadyCheck is a condition that a started sandbox's service meets once
// it is ready: a TCPCheck, HTTPCheck, LogCheck or HealthCheck. Give them
// to Options.WaitFor, or to WaitReady.
type ReadyCheck interface {
	// String names the check in errors.
	String() string
	validate() error
	// wait returns nil once the check passes, or why it never will, or
	// why it had not when ctx ended.
	wait(ctx context.Context, s *Sandbox, w *logWatch) error
}

// A TCPCheck passes once a TCP port of the sandbox accepts a connection.
// It is dialed on the sandbox's loopback, inside its network namespace
// (see DialContext): no published port or network is needed.
type TCPCheck struct {
	// Port is the sandbox's port; 0 means the image's first exposed TCP
	// port (its lowest; see ExposedPorts).
	Port int
	// Interval is the time between attempts (default 100ms); Timeout
	// bounds each (default 2s).
	Interval, Timeout time.Duration
}

// An HTTPCheck passes once an HTTP GET of a path of the sandbox answers
// as expected: a 2xx status by default. Like TCPCheck, it connects to the
// sandbox's loopback inside its network namespace. Redirects are not
// followed, and at most 4 KiB of the body is read.
type HTTPCheck struct {
	Port int    // as TCPCheck's
	Path string // the path and query to GET; "/" if empty
	// Status is the status expected; 0 means any 2xx.
	Status int
	// Body, if set, must match the body's first 4 KiB.
	Body *regexp.Regexp
	// Interval and Timeout are as TCPCheck's.
	Interval, Timeout time.Duration
}

// A LogCheck passes once lines of the workload's output match Match.
// Lines are matched as they are copied, each once it has ended (or has
// reached 16 KiB, a part of it then); in Start's WaitFor, every line from
// the first counts. WaitReady also counts the lines Options.LogBytes still
// keeps, and only those printed after it starts otherwise. A handle from
// Open reads its supervisor's log (State.Log), from the start.
type LogCheck struct {
	Match  *regexp.Regexp
	Stream string // "stdout", "stderr", or "" for either
	// Times is how many matching lines to wait for; 0 means 1.
	Times int
}

// String implementations name checks in errors; what a hostile image
// chose (a healthcheck's command) is not among it.

func (c TCPCheck) String() string {
	if c.Port == 0 {
		return "TCP check of the exposed port"
	}
	return "TCP check of port " + strconv.Itoa(c.Port)
}

func (c HTTPCheck) String() string {
	port := "the exposed port"
	if c.Port != 0 {
		port = "port " + strconv.Itoa(c.Port)
	}
	return fmt.Sprintf("HTTP check of %s on %s", clip.Quote(c.path()), port)
}

func (c LogCheck) String() string {
	if c.Match == nil {
		return "log check"
	}
	return "log check " + clip.Quote(c.Match.String())
}

func (c TCPCheck) validate() error {
	return checkProbe(c.Port, c.Interval, c.Timeout)
}

func (c HTTPCheck) validate() error {
	if err := checkProbe(c.Port, c.Interval, c.Timeout); err != nil {
		return err
	}
	if c.Status != 0 && (c.Status < 100 || c.Status > 599) {
		return fmt.Errorf("Status %d is not an HTTP status", c.Status)
	}
	_, err := c.url(80)
	return err
}

func (c LogCheck) validate() error {
	if c.Match == nil {
		return errors.New("no Match")
	}
	switch c.Stream {
	case "", "stdout", "stderr":
	default:
		return fmt.Errorf("Stream %s: want stdout, stderr or empty", clip.Quote(c.Stream))
	}
	if c.Times < 0 {
		return fmt.Errorf("Times %d is negative", c.Times)
	}
	return nil
}

func checkProbe(port int, interval, timeout time.Duration) error {
	if port < 0 || port > 65535 {
		return fmt.Errorf("Port %d is out of range", port)
	}
	if interval < 0 || timeout < 0 {
		return errors.New("negative Interval or Timeout")
	}
	return nil
}

func (c HTTPCheck) path() string {
	if c.Path == "" {
		return "/"
	}
	return c.Path
}

// url returns the URL to GET on the sandbox's loopback at port.
func (c HTTPCheck) url(port int) (string, error) {
	p := c.path()
	// Control characters, which could end the request line, are refused
	// by the parser.
	u, err := url.ParseRequestURI(p)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("Path %s is not an absolute path with an optional query", clip.Quote(p))
	}
	u.Scheme, u.Host = "http", loopback(port)
	return u.String(), nil
}

func (c TCPCheck) wait(ctx context.Context, s *Sandbox, _ *logWatch) error {
	port, err := s.probePort(c.Port)
	if err != nil {
		return err
	}
	timeout := orDefault(c.Timeout, defaultProbeTimeout)
	return poll(ctx, orDefault(c.Interval, defaultProbeInterval), func() error {
		actx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		conn, err := s.dialInside(actx, "tcp", loopback(port))
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

func (c HTTPCheck) wait(ctx context.Context, s *Sandbox, _ *logWatch) error {
	port, err := s.probePort(c.Port)
	if err != nil {
		return err
	}
	target, err := c.url(port)
	if err != nil {
		return err
	}
	addr := loopback(port)
	timeout := orDefault(c.Timeout, defaultProbeTimeout)
	client := &http.Client{
		Transport: &http.Transport{
			// Whatever the request, only the sandbox's own port.
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return s.dialInside(ctx, "tcp", addr)
			},
			Proxy:                  nil,
			DisableKeepAlives:      true,
			DisableCompression:     true,
			MaxResponseHeaderBytes: maxProbeHeader,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       timeout,
	}
	defer client.CloseIdleConnections()
	return poll(ctx, orDefault(c.Interval, defaultProbeInterval), func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
		if err != nil {
			return fmt.Errorf("read the response: %w", err)
		}
		if c.Status != 0 && resp.StatusCode != c.Status || c.Status == 0 && resp.StatusCode/100 != 2 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if c.Body != nil && !c.Body.Match(body) {
			return errors.New("the body does not match")
		}
		return nil
	})
}

func (c LogCheck) wait(ctx context.Context, s *Sandbox, w *logWatch) error {
	if w != nil {
		// Start's, set before the workload started.
		return waitWatch(ctx, s, w)
	}
	s.mu.Lock()
	l := s.output
	s.mu.Unlock()
	if l != nil {
		return waitWatch(ctx, s, l.watch(c.Match, c.Stream, c.Times))
	}
	if logPath := s.supervisorLog(); logPath != "" {
		return c.readLog(ctx, logPath)
	}
	return errors.New("the sandbox keeps no output to match: set Options.LogBytes, or WaitFor")
}

func waitWatch(ctx context.Context, s *Sandbox, w *logWatch) error {
	defer s.output.unwatch(w)
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d of %d lines seen: %w", w.seenNow(s.output), w.want, context.Cause(ctx))
	}
}

// seenNow reads how many lines have matched.
func (w *logWatch) seenNow(l *outputLog) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return w.seen
}

// errLogMatched ends ReadLog once enough lines have matched.
var errLogMatched = errors.New("log matched")

// readLog waits for the lines in a supervisor's log.
func (c LogCheck) readLog(ctx context.Context, path string) error {
	seen, want := 0, max(c.Times, 1)
	err := ReadLog(ctx, path, &LogOptions{Follow: true}, func(e LogEntry) error {
		if (c.Stream == "" || c.Stream == e.Stream) && c.Match.Match(e.Text) {
			if seen++; seen >= want {
				return errLogMatched
			}
		}
		return nil
	})
	if errors.Is(err, errLogMatched) {
		return nil
	}
	if err == nil || ctx.Err() != nil {
		return fmt.Errorf("%d of %d lines seen: %w", seen, want, context.Cause(ctx))
	}
	return fmt.Errorf("read the sandbox's log: %w", err)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// poll calls try, every interval, until it succeeds or ctx ends; the
// error then wraps ctx's cause and says how the last attempt failed.
func poll(ctx context.Context, interval time.Duration, try func() error) error {
	t := time.NewTimer(0)
	defer t.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("%w; last attempt: %w", context.Cause(ctx), last)
		case <-t.C:
		}
		err := try()
		if err == nil {
			return nil
		}
		// An attempt cut short by the end of the wait says only that;
		// the one before it says why the check never passed.
		if ctx.Err() == nil || last == nil {
			last = err
		}
		if ctx.Err() == nil {
			t.Reset(interval)
		}
	}
}

// probePort returns port, or for 0 the image's first exposed TCP port.
func (s *Sandbox) probePort(port int) (int, error) {
	if port != 0 {
		return port, nil
	}
	for _, p := range ExposedPorts(s.Image()) {
		if p.Protocol == "tcp" {
			return int(p.ContainerPort), nil
		}
	}
	return 0, errors.New("no port given, and the image exposes no TCP port")
}

// ExposedPorts returns the ports an image's config exposes (Dockerfile
// EXPOSE), lowest first, TCP before UDP of the same number, as port
// mappings with no host side yet. Entries that are not a port number
// from 1 to 65535 and "tcp", "udp" or "sctp" (the default being tcp) are
// left out: an image chooses them.
func ExposedPorts(img *layerfs.Image) []netplug.PortMapping {
	if img == nil || img.Config == nil {
		return nil
	}
	var ports []netplug.PortMapping
	for key := range img.Config.Config.ExposedPorts {
		num, proto, _ := strings.Cut(key, "/")
		if proto == "" {
			proto = "tcp"
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != num {
			continue
		}
		switch proto {
		case "tcp", "udp", "sctp":
			ports = append(ports, netplug.PortMapping{ContainerPort: uint16(n), Protocol: proto})
		}
	}
	sort.Slice(ports, func(i, j int) bool {
		if ports[i].ContainerPort != ports[j].ContainerPort {
			return ports[i].ContainerPort < ports[j].ContainerPort
		}
		return protoRank(ports[i].Protocol) < protoRank(ports[j].Protocol)
	})
	return ports
}

func protoRank(proto string) int {
	return strings.Index("tcp udp sctp", proto)
}

// ExposedPorts returns the ports the sandbox's image exposes (see the
// function ExposedPorts); nil before Start or Open has resolved the image.
func (s *Sandbox) ExposedPorts() []netplug.PortMapping {
	return ExposedPorts(s.Image())
}
