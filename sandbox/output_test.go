package sandbox

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// Output returns the standard output of a workload that succeeded, and
// an ExitError with its Result and the end of its standard error when it
// failed; one that could not start gives Start's error.
func TestOutput(t *testing.T) {
	ctx := context.Background()
	out, err := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sh", "-c", "echo out; echo err >&2"} })).Output(ctx)
	if err != nil || string(out) != "out\n" {
		t.Errorf("Output: %q, %v; want out", out, err)
	}

	out, err = New("alpine:test", opts(func(o *Options) { o.Args = []string{"sh", "-c", "echo out; echo err >&2; exit 3"} })).Output(ctx)
	ee, ok := err.(*ExitError)
	if !ok || ee.ExitCode != 3 || string(ee.Stderr) != "err\n" || string(out) != "out\n" {
		t.Errorf("Output of a failure: %q, %#v; want out, and an ExitError of status 3 with err", out, err)
	} else if ee.Error() != "sandbox workload exited with status 3" {
		t.Errorf("ExitError says %q", ee.Error())
	}

	// The end of a long standard error is kept.
	_, err = New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a >&2; echo END >&2; kill -9 $$"}
	})).Output(ctx)
	if !errors.As(err, &ee) || len(ee.Stderr) != stderrTail || !bytes.HasSuffix(ee.Stderr, []byte("aaaEND\n")) || ee.Signal != 9 {
		t.Errorf("Output of a failure with a long stderr: %v; want its last %d bytes", err, stderrTail)
	}

	// The caller's own Stdout is refused, and a sandbox runs once.
	sb := New("alpine:test", opts(func(o *Options) { o.Args, o.Stdout = []string{"true"}, &bytes.Buffer{} }))
	if _, err := sb.Output(ctx); err == nil || !strings.Contains(err.Error(), "Stdout") {
		t.Errorf("Output with a Stdout: %v", err)
	}
	sb = New("alpine:test", opts(func(o *Options) { o.Args = []string{"true"} }))
	if _, err := sb.Output(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Output(ctx); !errors.Is(err, ErrAlreadyStarted) {
		t.Errorf("second Output: %v; want ErrAlreadyStarted", err)
	}

	out, err = New("alpine:nosuchimage", opts(nil)).Output(ctx)
	if !errors.Is(err, ErrSetup) || errors.As(err, &ee) || out != nil {
		t.Errorf("Output of a missing image: %q, %v; want ErrSetup", out, err)
	}
}

// CombinedOutput keeps the order in which the workload wrote to its two
// streams.
func TestCombinedOutput(t *testing.T) {
	out, err := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "for i in 1 2 3; do echo o$i; echo e$i >&2; done; exit 1"}
	})).CombinedOutput(context.Background())
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode != 1 || ee.Stderr != nil {
		t.Errorf("CombinedOutput: %v; want an ExitError of status 1 without a separate stderr", err)
	}
	if string(out) != "o1\ne1\no2\ne2\no3\ne3\n" {
		t.Errorf("CombinedOutput: %q; want both streams in order", out)
	}
	sb := New("alpine:test", opts(func(o *Options) { o.Args, o.Stderr = []string{"true"}, &bytes.Buffer{} }))
	if _, err := sb.CombinedOutput(context.Background()); err == nil || !strings.Contains(err.Error(), "Stderr") {
		t.Errorf("CombinedOutput with a Stderr: %v", err)
	}
}

// Output keeps no more than OutputLimit of a workload's output in memory,
// and says it dropped the rest; the workload is not held up by it.
func TestOutputLimit(t *testing.T) {
	out, err := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "head -c 70000000 /dev/zero; echo done >&2"}
	})).Output(context.Background())
	if !errors.Is(err, ErrOutputLimit) || len(out) != OutputLimit {
		t.Errorf("Output of 70 MB: %d bytes, %v; want %d bytes and ErrOutputLimit", len(out), err, OutputLimit)
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		t.Errorf("a workload that succeeded gave an ExitError: %v", err)
	}
}
