package sandbox

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// ExecOptions.TTY gives the process a terminal, with the size Resize
// sends first and then the sizes it sends while the process runs.
func TestExecTTYResize(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "100"} }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	sizes := make(chan TerminalSize, 1)
	sizes <- TerminalSize{Rows: 10, Cols: 20}
	in, typed := io.Pipe()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		res, err := sb.Exec(context.Background(), &ExecOptions{
			Args: []string{"sh", "-c", "tty; stty size; while read x; do stty size; done"},
			TTY:  true, Resize: sizes, Stdin: in, Stdout: &out,
		})
		if err == nil && !res.Success() {
			err = errors.New("exec failed: " + out.String())
		}
		done <- err
	}()
	waitFor(t, func() bool { return strings.Contains(out.String(), "10 20\r\n") })
	sizes <- TerminalSize{Rows: 30, Cols: 40}
	// Each line typed makes it print its size again, until the new one
	// has been applied; Ctrl-D, the terminal's end of input, ends it.
	waitFor(t, func() bool {
		typed.Write([]byte("\r"))
		return strings.Contains(out.String(), "30 40\r\n")
	})
	typed.Write([]byte{4})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "/dev/pts/") {
		t.Errorf("exec -t printed %q", out.String())
	}
	typed.Close()

	for _, bad := range []*ExecOptions{
		{Args: []string{"true"}, TTY: true, HandOverStdio: true},
		{Args: []string{"true"}, Resize: sizes},
	} {
		if _, err := sb.Exec(context.Background(), bad); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Exec(%+v): %v", bad, err)
		}
	}
}
