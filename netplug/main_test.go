package netplug

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pluginDir holds the CNI plugins the tests run, found or built by
// TestMain; empty when not root, and the tests that need them skip.
var pluginDir string

const pluginsModule = "github.com/containernetworking/plugins"

func TestMain(m *testing.M) {
	runExamplesOnlyAsRoot()
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	dir, err := findPlugins()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netplug tests:", err)
		os.Exit(1)
	}
	pluginDir = dir

	// The bridge plugin turns on IPv4 forwarding, host-wide; put back
	// what the host had.
	const forward = "/proc/sys/net/ipv4/ip_forward"
	fwd, fwdErr := os.ReadFile(forward)
	before := snapshot()
	code := m.Run()
	if fwdErr == nil {
		os.WriteFile(forward, fwd, 0o644)
	}
	if after := waitSnapshot(before); after != before && code == 0 {
		fmt.Fprintf(os.Stderr, "netplug tests leaked:\n before %+v\n after  %+v\n", before, after)
		code = 1
	}
	os.Exit(code)
}

// runExamplesOnlyAsRoot leaves the examples out of a run without root,
// unless -run names what to run: they make real networks, which needs root,
// and an example cannot skip itself as a test does.
func runExamplesOnlyAsRoot() {
	flag.Parse()
	if os.Geteuid() == 0 || flag.Lookup("test.run").Value.String() != "" {
		return
	}
	fmt.Fprintln(os.Stderr, "not root: the examples, which make real networks, do not run")
	flag.Set("test.run", "^(Test|Fuzz)")
}

// findPlugins returns a directory with the plugins at the version go.mod
// pins: $BERTH_CNI_DIR or DefaultPluginDir if they have it, else a cache
// per version in $HOME/.cache/berth/cni, built there by hack/build-cni.sh
// if need be (about 20 s, once).
func findPlugins() (string, error) {
	// go test puts its own go first on PATH.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", pluginsModule).Output()
	version := strings.TrimSpace(string(out))
	if err != nil || version == "" {
		return "", fmt.Errorf("cannot tell which %s version go.mod pins: %v", pluginsModule, err)
	}
	has := func(dir string) bool {
		v, err := os.ReadFile(filepath.Join(dir, "VERSION"))
		return err == nil && strings.TrimSpace(string(v)) == version && hasPlugins(dir)
	}
	for _, d := range []string{os.Getenv(PluginDirEnv), DefaultPluginDir} {
		if d != "" && has(d) {
			return d, nil
		}
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(home, ".cache", "berth", "cni", version)
	if has(dir) {
		return dir, nil
	}
	start := time.Now()
	var log bytes.Buffer
	cmd := exec.Command("../hack/build-cni.sh", dir)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the CNI plugins: %w\n%s", err, log.Bytes())
	}
	fmt.Fprintf(os.Stderr, "netplug tests: built the CNI plugins %s into %s in %v\n", version, dir, time.Since(start).Round(time.Millisecond))
	return dir, nil
}

func hasPlugins(dir string) bool {
	for _, p := range []string{"bridge", "host-local", "portmap", "firewall", "tuning", "loopback"} {
		if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}
