package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/berth-dev/berth/sandbox"
)

// execTerminal sets up `berth exec -t`: the process gets a terminal of
// its own, sized as berth's and resized with it (SIGWINCH); with -i,
// berth's own terminal goes raw, so that keys reach the process as typed
// (Ctrl-C included). It returns what undoes that.
func execTerminal(eo *sandbox.ExecOptions) (restore func(), err error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, invalidFlag("-t: standard input is not a terminal")
	}
	eo.TTY, eo.Stderr = true, nil
	sizes := make(chan sandbox.TerminalSize, 1)
	eo.Resize = sizes
	send := func() {
		w, h, err := term.GetSize(fd)
		if err != nil {
			return
		}
		// Only the latest size matters: one not yet taken is replaced.
		select {
		case <-sizes:
		default:
		}
		sizes <- sandbox.TerminalSize{Rows: uint16(h), Cols: uint16(w)}
	}
	send()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-winch:
				send()
			case <-done:
				return
			}
		}
	}()
	var old *term.State
	if eo.Stdin != nil {
		if old, err = term.MakeRaw(fd); err != nil {
			signal.Stop(winch)
			close(done)
			return nil, err
		}
	}
	return func() {
		signal.Stop(winch)
		close(done)
		if old != nil {
			term.Restore(fd, old)
		}
	}, nil
}
