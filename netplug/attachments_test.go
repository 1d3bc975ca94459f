package netplug

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Attachments finds a sandbox's record in each network's directory, and
// only its own; a lookup costs one open per network, however many other
// sandboxes are attached (berth ps asks for each sandbox it lists).
func TestAttachmentsFromRecords(t *testing.T) {
	run := t.TempDir()
	n, err := Open(&Options{RunDir: run, ConfigDir: t.TempDir(), PluginDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	write := func(cni, id string, r *record) {
		dir := filepath.Join(run, "attachments", cni)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r)
		if err := os.WriteFile(filepath.Join(dir, id+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("berth", "sb1", &record{ID: "sb1", Network: "bridge", IfName: "eth0", Ports: []PortMapping{{HostPort: 8080, ContainerPort: 80}}})
	write("berth-db", "sb1", &record{ID: "sb1", Network: "db", IfName: "eth1"})
	write("berth-db", "sb2", &record{ID: "sb2", Network: "db", IfName: "eth0"})
	write("berth-x", "sb3", &record{ID: "other", Network: "x"}) // names another sandbox
	os.WriteFile(filepath.Join(run, "attachments", "berth-db", "sb4.json"), []byte("{"), 0o600)
	for i := range 2000 {
		id := fmt.Sprintf("many%d", i)
		write("berth", id, &record{ID: id, Network: "bridge"})
	}
	atts, err := n.Attachments(t.Context(), "sb1")
	slices.SortFunc(atts, func(a, b *Attachment) int { return strings.Compare(a.Network, b.Network) })
	if err != nil || len(atts) != 2 || atts[0].Network != "bridge" || atts[0].Ports[0].HostPort != 8080 || atts[1].Network != "db" || atts[1].Interface != "eth1" {
		t.Fatalf("Attachments(sb1) = %+v, %v", atts, err)
	}
	for _, id := range []string{"sb3", "sb4", "none"} {
		if atts, err := n.Attachments(t.Context(), id); err != nil || len(atts) != 0 {
			t.Errorf("Attachments(%s) = %+v, %v", id, atts, err)
		}
	}
	if _, err := n.Attachments(t.Context(), "../x"); err == nil {
		t.Error("Attachments of an invalid ID succeeded")
	}
	start := time.Now()
	for i := range 1000 {
		n.Attachments(t.Context(), fmt.Sprintf("many%d", i))
	}
	t.Logf("1000 lookups among 2000 attachments: %v", time.Since(start))
}
