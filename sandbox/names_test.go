package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// namedSleeper returns a started sandbox that sleeps, named name, closed at
// the test's end.
func namedSleeper(t *testing.T, name string) *Sandbox {
	t.Helper()
	sb := New("busybox:test", opts(func(o *Options) {
		o.Args = []string{"sleep", "1000"}
		o.Name = name
		o.Labels = map[string]string{"app": "names-test", "tier": "a b"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	return sb
}

func TestNameUniqueOpenAndReleased(t *testing.T) {
	ctx := context.Background()
	a := namedSleeper(t, "")
	// A name that is also a prefix of another sandbox's ID: the name wins.
	name := a.ID()[:6]
	b := namedSleeper(t, name)

	h, err := Open(ctx, name, opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if h.ID() != b.ID() {
		t.Errorf("Open(%q) = %s, want the sandbox named so, %s (not %s)", name, h.ID(), b.ID(), a.ID())
	}
	h.Close()
	st := h.state
	if st.Name != name || st.Labels["app"] != "names-test" || st.Labels["tier"] != "a b" {
		t.Errorf("record: name %q, labels %v", st.Name, st.Labels)
	}
	// An ID prefix still finds a sandbox with a name.
	if h, err := Open(ctx, b.ID()[:8], opts(nil)); err != nil || h.ID() != b.ID() {
		t.Errorf("Open by ID prefix of a named sandbox: %v", err)
	}

	dup := New("busybox:test", opts(func(o *Options) { o.Args = []string{"true"}; o.Name = name }))
	if err := dup.Start(ctx); !errors.Is(err, ErrNameInUse) || !errors.Is(err, ErrSetup) {
		t.Fatalf("start with a name in use: %v", err)
	}
	// The refused start took nothing of the other's.
	if h, err := Open(ctx, name, opts(nil)); err != nil || h.ID() != b.ID() {
		t.Fatalf("the name after a refused start: %v", err)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(testEnv.stateDir, namesDir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("name link after Close: %v", err)
	}
	// The name is gone; what it spells is an ID prefix again.
	if h, err := Open(ctx, name, opts(nil)); err != nil || h.ID() != a.ID() {
		t.Errorf("Open(%q) once the sandbox named so is closed: %v, want %s", name, err, a.ID())
	}
	res, _, _ := run(t, "busybox:test", opts(func(o *Options) { o.Args = []string{"true"}; o.Name = name }))
	if !res.Success() {
		t.Errorf("reuse of a released name: %+v", res)
	}
	// With the last name gone, so is the directory: a state directory
	// holds nothing of sandboxes that have ended.
	if _, err := os.Stat(filepath.Join(testEnv.stateDir, namesDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("names directory with no names: %v", err)
	}
}

func TestNameRaceOneWins(t *testing.T) {
	const n = 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won, lost int
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb := New("busybox:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"}; o.Name = "race" }))
			err := sb.Start(context.Background())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
				t.Cleanup(func() { sb.Close() })
			case errors.Is(err, ErrNameInUse):
				lost++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won != 1 || lost != n-1 {
		t.Errorf("%d starts won the name, %d lost, want 1 and %d", won, lost, n-1)
	}
}

// A name whose sandbox died with its owner (a killed berth leaves the
// link) is free again, and Recover removes such links.
func TestNameStale(t *testing.T) {
	dir := filepath.Join(testEnv.stateDir, namesDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// One with no state directory, one with a directory nobody owns, and
	// one that is not a link at all.
	unowned := "00000000000000aa"
	if err := os.Mkdir(filepath.Join(testEnv.stateDir, unowned), 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(testEnv.stateDir, unowned)) })
	must(0, os.Symlink("00000000000000ff", filepath.Join(dir, "gone")))
	must(0, os.Symlink(unowned, filepath.Join(dir, "unowned")))
	must(0, os.WriteFile(filepath.Join(dir, "file"), nil, 0o600))
	for _, name := range []string{"gone", "unowned", "file"} {
		namedSleeper(t, name)
		if h, err := Open(context.Background(), name, opts(nil)); err != nil {
			t.Errorf("%s: %v", name, err)
		} else {
			h.Close()
		}
	}

	must(0, os.Symlink("00000000000000ee", filepath.Join(dir, "stale")))
	if _, err := Recover(context.Background(), opts(nil)); err != nil {
		t.Log(err) // other tests' leftovers are not this test's
	}
	if _, err := os.Lstat(filepath.Join(dir, "stale")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a stale name after Recover: %v", err)
	}
	for _, name := range []string{"gone", "unowned", "file"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			t.Errorf("Recover removed the name of a live sandbox: %v", err)
		}
	}
}

func TestNameAndLabelsValidation(t *testing.T) {
	bad := []string{"../x", "..", ".x", "-x", "a/b", "a b", "x\ny", "é", strings.Repeat("a", MaxNameLength+1), "a\x00"}
	for _, name := range bad {
		if err := (&Options{Name: name}).Validate(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Name %q: %v", name, err)
		}
	}
	for _, name := range []string{"db", "a.b-c_d", "0", strings.Repeat("a", MaxNameLength)} {
		if err := (&Options{Name: name}).Validate(); err != nil {
			t.Errorf("Name %q: %v", name, err)
		}
	}
	badLabels := []map[string]string{
		{"": "x"}, {"a=b": "c"}, {"a": "line\nforged"}, {"a\rb": "c"}, {"a": "\x1b[2J"},
		{"a": "\xff"}, {"a": strings.Repeat("v", maxLabelValue+1)}, {strings.Repeat("k", maxLabelKey+1): ""},
	}
	for _, l := range badLabels {
		if err := (&Options{Labels: l}).Validate(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Labels %q: %v", l, err)
		}
	}
	if err := (&Options{Labels: map[string]string{"com.example/x": "a = b, ünïcode"}}).Validate(); err != nil {
		t.Error(err)
	}
	// Refused before anything is made.
	err := New("busybox:test", opts(func(o *Options) { o.Name = "../../etc" })).Start(context.Background())
	if !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("start with Name ../../etc: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(testEnv.stateDir, "etc")); err == nil {
		t.Error("a name made something outside the names directory")
	}
}
