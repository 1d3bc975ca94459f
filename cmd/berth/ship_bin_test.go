package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/registrytest"
)

// stallingProxy stands in front of a registry and passes everything on,
// but a layer download (a blob of more than 64 KiB) stalls after its
// first KiB until the client goes away. stalled receives the blob's path
// each time one does.
func stallingProxy(t *testing.T, registryHost string) (host string, stalled <-chan string) {
	t.Helper()
	ch := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+registryHost+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		// Redirects go back to the client, as a registry's would.
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		stall := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && resp.ContentLength > 64<<10
		if !stall {
			io.Copy(w, resp.Body)
			return
		}
		io.CopyN(w, resp.Body, 1024)
		w.(http.Flusher).Flush()
		ch <- r.URL.Path
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), ch
}

// Ctrl-C stops a pull at once: berth exits non-zero saying it was
// interrupted, and the store holds no image and no half-written blob.
func TestPullInterrupted(t *testing.T) {
	e := newShipEnv(t, nil)
	e.copyBusybox(t, "x/busybox:1")
	proxy, stalled := stallingProxy(t, e.reg.Host)
	bin := buildBerth(t)

	ref := proxy + "/x/busybox:1"
	cmd := exec.Command(bin, "--root", e.root, "image", "pull", ref)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-stalled:
	case err := <-exited:
		t.Fatalf("berth image pull %s ended before its layer came: %v\n%s", ref, err, stderr.String())
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("berth image pull %s never asked for its layer\n%s", ref, stderr.String())
	}
	cmd.Process.Signal(os.Interrupt)
	var err error
	select {
	case err = <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("berth image pull went on for a minute after Ctrl-C\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure || !strings.Contains(stderr.String(), "interrupted") || !strings.Contains(stderr.String(), ref) {
		t.Errorf("berth image pull after Ctrl-C: %v, stderr %q; want exit %d saying %s was interrupted", err, stderr.String(), exitFailure, ref)
	}
	if out, err := berth(t, e.root, "image", "inspect", ref); err == nil {
		t.Errorf("an interrupted pull left the image in the store:\n%s", out)
	}
	out, _ := berth(t, e.root, "image", "check")
	if strings.Contains(out, "interrupted") {
		t.Errorf("an interrupted pull left this in the store:\n%s", out)
	}
}

// openPty opens a pseudo-terminal 100 columns wide: the master to read
// what is drawn, the slave to draw on.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 100}); err != nil {
		t.Fatal(err)
	}
	return m, s
}

// On a terminal, pull draws a bar for its layer; its standard output, a
// pipe, still gets the digest alone, with no escape codes.
func TestPullBarsOnTerminal(t *testing.T) {
	e := newShipEnv(t, nil)
	want := e.copyBusybox(t, "x/busybox:1")
	bin := buildBerth(t)
	master, slave := openPty(t)

	ref := e.ref("x/busybox:1")
	cmd := exec.Command(bin, "--root", e.root, "image", "pull", ref)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	drawn := make(chan []byte)
	go func() {
		// Until the slave's last holder closes it: then EIO.
		b, _ := io.ReadAll(master)
		drawn <- b
	}()
	err := cmd.Wait()
	slave.Close()
	var screen []byte
	select {
	case screen = <-drawn:
	case <-time.After(time.Minute):
		t.Fatal("the terminal never closed")
	}
	if err != nil || stdout.String() != want+" ("+ref+")\n" {
		t.Fatalf("berth image pull on a terminal: %v, stdout %q\nterminal %q", err, stdout.String(), screen)
	}
	if !bytes.Contains(screen, []byte("5c3b447848a9")) || !bytes.Contains(screen, []byte("[===")) || !bytes.Contains(screen, []byte("Pull complete")) {
		t.Errorf("the terminal shows no bar for the layer:\n%q", screen)
	}
	if bytes.Contains(screen, []byte("5c3b447848a9: Pull complete")) {
		t.Errorf("the terminal got the lines meant for logs:\n%q", screen)
	}
}

// terminalReader collects what a pty's master reads, so that a test can
// wait for a prompt.
type terminalReader struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{} // signalled after each read
	done chan struct{} // closed at EOF or EIO
}

func readTerminal(master *os.File) *terminalReader {
	r := &terminalReader{more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			r.mu.Lock()
			r.buf.Write(b[:n])
			r.mu.Unlock()
			select {
			case r.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *terminalReader) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// waitFor waits until the terminal has shown s.
func (r *terminalReader) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for !strings.Contains(r.String(), s) {
		select {
		case <-r.more:
		case <-r.done:
			t.Fatalf("the terminal closed without showing %q:\n%q", s, r.String())
		case <-timeout:
			t.Fatalf("the terminal never showed %q:\n%q", s, r.String())
		}
	}
}

// On a terminal, login asks for the user name and the password, and the
// password is not echoed for someone behind the user to read.
func TestLoginPrompts(t *testing.T) {
	const user, password = "ci", "s3cret-Pa55"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newShipEnv(t, &registrytest.Options{Htpasswd: user + ":" + string(hash) + "\n"})
	bin := buildBerth(t)
	master, slave := openPty(t)

	cmd := exec.Command(bin, "login", e.reg.Host)
	var stdout bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, &stdout, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	screen := readTerminal(master)
	screen.waitFor(t, "Username: ")
	io.WriteString(master, user+"\n")
	screen.waitFor(t, "Password: ")
	io.WriteString(master, password+"\n")
	err = cmd.Wait()
	slave.Close()
	<-screen.done
	if err != nil || stdout.String() != "logged in to "+e.reg.Host+"\n" {
		t.Fatalf("login on a terminal: %v, %q\nterminal %q", err, stdout.String(), screen.String())
	}
	if !strings.Contains(screen.String(), user) || strings.Contains(screen.String(), password) {
		t.Errorf("the terminal showed %q; want the user name echoed and the password not", screen.String())
	}
	if auths := dockerAuths(t, e.dockerCfg); auths[e.reg.Host] == nil {
		t.Errorf("after login, config.json keeps credentials for %v, not %s", auths, e.reg.Host)
	}
}
