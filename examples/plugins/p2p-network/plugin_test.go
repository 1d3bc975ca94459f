package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/plugin/plugintest"
	"github.com/berth-dev/berth/sandbox"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// pluginBinary builds this plugin once per test run.
func pluginBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "p2p-network-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "p2p-network")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// hostOptions start the plugin with a state directory of the test's own.
func hostOptions(t testing.TB, stateDir, subnet string) *plugin.Options {
	return &plugin.Options{
		Env:      []string{"BERTH_P2P_STATE_DIR=" + stateDir},
		Settings: map[string]string{settingSubnet: subnet},
		RunDir:   t.TempDir(),
	}
}

// The plugin keeps berth's network contract, as the kit checks it.
func TestConformance(t *testing.T) {
	needRoot(t)
	bin := pluginBinary(t)
	state := t.TempDir()
	plugintest.Network(t, bin, &plugintest.NetworkOptions{
		Settings: map[string]string{settingSubnet: "10.218.16.0/24"},
		Host:     &plugin.Options{Env: []string{"BERTH_P2P_STATE_DIR=" + state}},
		// The plugin makes veths only, which the kit tells apart itself.
		// `go test ./...` runs other packages' tests meanwhile, whose
		// networks add bridges named berth*: they are not this plugin's.
		KeepLinks: []string{"berth*"},
	})
}

// A real sandbox on the plugin reaches a web server the test runs on the
// host end's address, and not one on the host's 127.0.0.1; once it is
// gone, nothing of its link is left.
func TestSandboxReachesHost(t *testing.T) {
	needRoot(t)
	e := sandboxEnv(t)
	state := t.TempDir()
	n, err := plugin.OpenNetwork(t.Context(), pluginBinary(t), hostOptions(t, state, "10.218.17.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	// Servers on the host: one on the address the sandbox will be given as
	// its gateway (the first of the subnet's first free /31 after the
	// skipped one), one on the host's loopback.
	gateway := "10.218.17.2"
	loopback := serveHTTP(t, "127.0.0.1:0", "from-loopback")
	var out, errOut strings.Builder
	sb := sandbox.New("busybox:test", &sandbox.Options{
		Args: []string{"/bin/sh", "-c", `
			# wait for the host end's server: it listens once the link exists
			i=0; until wget -qO- -T 2 http://$GW:$PORT/ ; do i=$((i+1)); [ $i -lt 50 ] || exit 3; sleep 0.1; done
			echo
			if wget -qO- -T 2 http://127.0.0.1:$LOPORT/ ; then echo reached-loopback; fi
			echo done`},
		Env:     []string{"GW=" + gateway, "PORT=8089", "LOPORT=" + portOf(loopback)},
		Network: n,
		Stdout:  &out, Stderr: &errOut,
		Storage: e.Store, Cgroups: e.Cgroups, StateDir: e.StateDir,
	})
	if err := sb.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := sb.Attachment()
	if a == nil || a.Gateway.String() != gateway {
		sb.Kill()
		sb.Wait()
		t.Fatalf("attachment %+v, want gateway %s", a, gateway)
	}
	serveHTTP(t, net.JoinHostPort(gateway, "8089"), "from-host-end")
	res, err := sb.Wait()
	if err != nil {
		t.Fatal(err)
	}
	sb.Close()
	got := out.String()
	if !res.Success() {
		t.Fatalf("exit %d: %s\n%s", res.ExitCode, got, errOut.String())
	}
	if !strings.Contains(got, "from-host-end") {
		t.Errorf("the sandbox did not reach the host end's server: %q", got)
	}
	if strings.Contains(got, "from-loopback") || strings.Contains(got, "reached-loopback") {
		t.Errorf("the sandbox reached the host's 127.0.0.1: %q", got)
	}
	if ids, err := n.Attached(t.Context()); err != nil || len(ids) != 0 {
		t.Errorf("attached after the sandbox is gone: %v, %v", ids, err)
	}
	if linkExists(t, hostIfName(sb.ID())) {
		t.Errorf("host end %s left", hostIfName(sb.ID()))
	}
	if ents, _ := os.ReadDir(state); len(ents) > 1 {
		t.Errorf("state directory holds %v", ents)
	}
}

// sandboxEnv sets up a store with busybox, a cgroup parent and a state
// directory for sandboxes, undone when the test ends.
func sandboxEnv(t *testing.T) *testenv.Env {
	t.Helper()
	e, err := testenv.Setup(testenv.Options{
		Name:   "berth-p2ptest",
		Images: map[string]string{"busybox:test": testenv.Busybox},
		// The set-up's own bridge network, never attached to here.
		Bridge: "berth-p2pt", Subnet: netip.MustParsePrefix("10.218.99.0/24"),
	})
	t.Cleanup(e.Close)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A port a real sandbox publishes through the plugin (sandbox.Options.Ports)
// reaches its web server from the host's 127.0.0.1.
func TestSandboxPublishedPort(t *testing.T) {
	needRoot(t)
	e := sandboxEnv(t)
	n, err := plugin.OpenNetwork(t.Context(), pluginBinary(t), hostOptions(t, t.TempDir(), "10.218.19.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var errOut strings.Builder
	sb := sandbox.New("busybox:test", &sandbox.Options{
		Args:    []string{"/bin/sh", "-c", "mkdir -p /www && echo from-the-sandbox > /www/index.html && exec httpd -f -p 8080 -h /www"},
		Network: n,
		Ports:   []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 8080, Protocol: "tcp"}},
		Stderr:  &errOut,
		Storage: e.Store, Cgroups: e.Cgroups, StateDir: e.StateDir,
	})
	if err := sb.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	a := sb.Attachment()
	if a == nil || len(a.Ports) != 1 || a.Ports[0].HostPort == 0 {
		t.Fatalf("attachment %+v: want one port with its host port chosen", a)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", a.Ports[0].HostPort)
	var body string
	for range 100 { // httpd starts after the attachment
		if resp, err := http.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); body != "" {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if body != "from-the-sandbox\n" {
		t.Errorf("%s answered %q; want from-the-sandbox (stderr %q)", url, body, errOut.String())
	}
	sb.Kill()
	sb.Wait()
	if resp, err := http.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("%s still answers after the sandbox is gone", url)
	}
}

// serveHTTP serves body on addr until the test ends.
func serveHTTP(t testing.TB, addr, body string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l
}

func portOf(l net.Listener) string { return fmt.Sprint(l.Addr().(*net.TCPAddr).Port) }

// After kill -9 of the plugin with a sandbox attached, the next call
// starts it again, and the restarted plugin lists and detaches the
// sandbox, leaving nothing.
func TestKilledPluginDetach(t *testing.T) {
	needRoot(t)
	state := t.TempDir()
	n, err := plugin.OpenNetwork(t.Context(), pluginBinary(t), hostOptions(t, state, "10.218.18.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ns := newNS(t)
	id := testID(t, "a")
	if _, err := n.Attach(t.Context(), id, ns.path, nil); err != nil {
		t.Fatal(err)
	}
	killPlugin(t, pluginBinary(t))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var ids []string
	for range 2 { // the first call after the kill may report the exit
		if ids, err = n.Attached(ctx); err == nil {
			break
		}
		t.Logf("first call after kill -9: %v", err)
	}
	if err != nil || len(ids) != 1 || ids[0] != id {
		t.Fatalf("restarted plugin lists %v, %v; want [%s]", ids, err, id)
	}
	if err := n.Detach(ctx, id, ns.path); err != nil {
		t.Fatal(err)
	}
	if linkExists(t, hostIfName(id)) {
		t.Errorf("host end %s left", hostIfName(id))
	}
	if ents, _ := os.ReadDir(state); len(ents) > 1 {
		t.Errorf("state directory holds %v", ents)
	}
}

// killPlugin sends SIGKILL to this test's children running bin.
func killPlugin(t testing.TB, bin string) {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != bin {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// ppid is the 4th field, after the ")" that ends comm.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[1] != fmt.Sprint(os.Getpid()) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed++
		}
	}
	if killed == 0 {
		t.Fatal("no plugin process of this test's to kill")
	}
}
