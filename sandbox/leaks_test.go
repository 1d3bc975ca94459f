package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/cgroup"
)

// The leak checks' listings. Each fails the test when it cannot list what
// it looks for: an error must never read as "nothing left".

// sharedStateEntries are what a state directory holds besides its
// sandboxes', and keeps: the compiled seccomp programs and the lock that
// orders starts before Recover's survey.
var sharedStateEntries = []string{"seccomp", rootLockName}

// stateLeft returns the entries of the state directory dir that belong to
// sandboxes: each one's directory, whether or not its record can be read
// (ReadStates skips those it cannot), and any file half-written there.
// keep names more entries that are not sandboxes'. A directory that does
// not exist holds nothing.
func stateLeft(t *testing.T, dir string, keep ...string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("list the state directory: %v", err)
	}
	var left []string
	for _, e := range entries {
		if !slices.Contains(sharedStateEntries, e.Name()) && !slices.Contains(keep, e.Name()) {
			left = append(left, e.Name())
		}
	}
	return left
}

// cgroupsLeft returns the cgroups in m's parent.
func cgroupsLeft(t *testing.T, m *cgroup.Manager) []string {
	t.Helper()
	names, err := m.List()
	if err != nil {
		t.Fatalf("list cgroups: %v", err)
	}
	return names
}

// rootfsesLeft returns the keys of the rootfses in the test store.
func rootfsesLeft(t *testing.T) []string {
	t.Helper()
	keys, err := testEnv.store.Rootfses(context.Background())
	if err != nil {
		t.Fatalf("list rootfses: %v", err)
	}
	return keys
}

// leftBehind reports what of berth's a test left: rootfses, cgroups,
// state directories, mounts under the store or the state directory.
func leftBehind(t *testing.T) []string {
	t.Helper()
	var left []string
	if r := rootfsesLeft(t); len(r) > 0 {
		left = append(left, "rootfses "+strings.Join(r, " "))
	}
	if names := cgroupsLeft(t, testEnv.cgroups); len(names) > 0 {
		left = append(left, "cgroups "+strings.Join(names, " "))
	}
	if s := stateLeft(t, testEnv.stateDir); len(s) > 0 {
		left = append(left, "state "+strings.Join(s, " "))
	}
	if m := mountsUnder(t, testEnv.store.Root()); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, " "))
	}
	if m := mountsUnder(t, testEnv.stateDir); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, " "))
	}
	return left
}

// netTraces names what one test's attachments put on the host, so that
// their leftovers are found by name: unlike a count of the host's veths
// and rules, other programs' networks, coming and going meanwhile, can
// neither hide a leftover nor fake one.
type netTraces struct {
	ids    []string // the sandboxes'
	ports  []string // the host's ends of their veths
	chains []string // the iptables chains their rules jump to
}

// traceNetworks finds, while the sandboxes ids are attached, what their
// attachments (recorded under runDir) put on the host; nil ids means
// every attachment recorded there.
func traceNetworks(t *testing.T, runDir string, ids []string) netTraces {
	t.Helper()
	tr := netTraces{ids: ids}
	recs, err := filepath.Glob(filepath.Join(runDir, "attachments", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range recs {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			// Detached between the glob and the read: a pool
			// discards used namespaces in the background.
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			ID   string `json:"id"`
			Port string `json:"port"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatalf("attachment record %s: %v", p, err)
		}
		if ids != nil && !slices.Contains(ids, rec.ID) {
			continue
		}
		if ids == nil {
			tr.ids = append(tr.ids, rec.ID)
		}
		if rec.Port != "" {
			tr.ports = append(tr.ports, rec.Port)
		}
	}
	for _, rule := range iptablesRules(t) {
		f := strings.Fields(rule)
		if i := slices.Index(f, "-j"); i > 0 && i+1 < len(f) && strings.HasPrefix(f[i+1], "CNI-") && tr.names(rule) {
			tr.chains = append(tr.chains, f[i+1])
		}
	}
	return tr
}

// names reports whether line names one of tr's sandboxes, ports or
// chains.
func (tr netTraces) names(line string) bool {
	for _, group := range [][]string{tr.ids, tr.ports, tr.chains} {
		for _, s := range group {
			if strings.Contains(line, s) {
				return true
			}
		}
	}
	return false
}

// left returns what of tr is on the host: the veths, iptables rules and
// chains naming the sandboxes, their ports or their chains, nftables
// chains filtering their ports, and IPAM leases under runDir.
func (tr netTraces) left(t *testing.T, runDir string) []string {
	t.Helper()
	var left []string
	for _, port := range tr.ports {
		if _, err := os.Stat(filepath.Join("/sys/class/net", port)); err == nil {
			left = append(left, "veth "+port)
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	for _, rule := range iptablesRules(t) {
		if tr.names(rule) {
			left = append(left, "iptables "+rule)
		}
	}
	out, err := exec.Command("nft", "list", "ruleset").Output()
	if err != nil {
		t.Fatalf("nft list ruleset: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		for _, port := range tr.ports {
			if strings.TrimSpace(l) == "chain port-"+port+" {" {
				left = append(left, "nftables chain port-"+port)
			}
		}
	}
	leases, err := filepath.Glob(filepath.Join(runDir, "ipam", "*", "[0-9]*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		left = append(left, "lease "+filepath.Base(l))
	}
	return left
}

// iptablesRules returns the lines of iptables-save: chains and rules.
func iptablesRules(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}
