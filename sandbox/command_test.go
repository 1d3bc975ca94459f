package sandbox

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/layerfs"
)

// entrypointImage is alpine:test with an entrypoint and a cmd of its own,
// made once for the tests that need one: `echo ep` and `echo cmd`, so that
// what a run prints says which of them it ran.
var entrypointImage = sync.OnceValues(func() (string, error) {
	const name = "alpine:entrypoint"
	base, err := testEnv.store.Image(context.Background(), "alpine:test")
	if err != nil {
		return "", err
	}
	cfg := base.Config.Config.DeepCopy()
	cfg.Entrypoint, cfg.Cmd = []string{"echo", "ep"}, []string{"echo", "cmd"}
	_, err = testEnv.store.CommitConfig(context.Background(), base, &layerfs.CommitOptions{Name: name, Config: cfg})
	return name, err
})

func testEntrypointImage(t *testing.T) string {
	t.Helper()
	ref, err := entrypointImage()
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// Args replaces the image's Cmd only, as `docker run IMAGE ARGS` does, and
// Entrypoint the image's entrypoint, dropping its Cmd, as `docker run
// --entrypoint` does; an empty Entrypoint clears the image's.
func TestEntrypointAndArgs(t *testing.T) {
	ref := testEntrypointImage(t)
	for _, c := range []struct {
		name       string
		entrypoint []string
		args       []string
		want       string
	}{
		{"image's", nil, nil, "ep echo cmd\n"},
		{"Args replace the Cmd", nil, []string{"a", "b"}, "ep a b\n"},
		{"an empty first argument is the entrypoint's", nil, []string{"", "x"}, "ep  x\n"},
		{"cleared entrypoint", []string{}, nil, "cmd\n"},
		{"cleared entrypoint, Args", []string{}, []string{"echo", "x"}, "x\n"},
		{"Entrypoint drops the Cmd", []string{"echo", "new"}, nil, "new\n"},
		{"Entrypoint and Args", []string{"echo", "new"}, []string{"a"}, "new a\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := New(ref, opts(func(o *Options) { o.Entrypoint, o.Args = c.entrypoint, c.args })).Output(context.Background())
			if err != nil || string(out) != c.want {
				t.Errorf("Entrypoint %q, Args %q: %q, %v; want %q", c.entrypoint, c.args, out, err, c.want)
			}
		})
	}

	// A pool's sandbox takes Entrypoint as its own.
	p, err := NewPool(context.Background(), ref, opts(nil), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Args: []string{"a"}}, "ep a\n"},
		{Options{Entrypoint: []string{}, Args: []string{"echo", "x"}}, "x\n"},
	} {
		out, err := p.New(&c.o).Output(context.Background())
		if err != nil || string(out) != c.want {
			t.Errorf("pool: Entrypoint %q, Args %q: %q, %v; want %q", c.o.Entrypoint, c.o.Args, out, err, c.want)
		}
	}
}

// Exec runs its Args as the whole command: the image's entrypoint is the
// workload's, not every process's.
func TestExecIgnoresEntrypoint(t *testing.T) {
	sb := New(testEntrypointImage(t), opts(func(o *Options) { o.Entrypoint, o.Args = []string{}, []string{"sleep", "1000"} }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	var out strings.Builder
	res, err := sb.Exec(context.Background(), &ExecOptions{Args: []string{"echo", "x"}, Stdout: &out})
	if err != nil || !res.Success() || out.String() != "x\n" {
		t.Errorf("exec: %+v, %v, %q; want x", res, err, out.String())
	}
}

// A command line with no program is refused: before anything is made
// where the options alone say so, and by Start where the image's
// entrypoint decides.
func TestNoProgram(t *testing.T) {
	for _, c := range []struct {
		name       string
		entrypoint []string
		args       []string
		want       string
	}{
		{"empty Entrypoint[0]", []string{""}, []string{"x"}, "Entrypoint[0] is empty"},
		{"empty Args[0], entrypoint cleared", []string{}, []string{"", "x"}, "Args[0] is empty"},
		{"NUL in Entrypoint", []string{"echo", "a\x00b"}, nil, `Entrypoint[1] "a\x00b" contains a NUL byte`},
	} {
		o := Options{Entrypoint: c.entrypoint, Args: c.args}
		if err := o.Validate(); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate: %v; want %q", c.name, err, c.want)
		}
	}
	// alpine:test has no entrypoint: an empty Args[0] is its program.
	_, err := New("alpine:test", opts(func(o *Options) { o.Args = []string{"", "x"} })).Run(context.Background())
	if !errors.Is(err, ErrInvalidOptions) || !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "program") {
		t.Errorf("empty program: %v; want an ErrInvalidOptions saying so", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
