package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
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
	// The process's terminal has done the output processing (a newline
	// made \r\n) already: berth's must not do it again. Without -i,
	// only that: keys stay berth's, Ctrl-C among them.
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err == nil {
		raw := *old
		raw.Oflag &^= unix.OPOST
		if eo.Stdin != nil {
			raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
			raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
			raw.Cflag &^= unix.CSIZE | unix.PARENB
			raw.Cflag |= unix.CS8
			raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		}
		err = unix.IoctlSetTermios(fd, unix.TCSETS, &raw)
	}
	if err != nil {
		signal.Stop(winch)
		close(done)
		return nil, fmt.Errorf("-t: set up the terminal: %w", err)
	}
	return func() {
		signal.Stop(winch)
		close(done)
		unix.IoctlSetTermios(fd, unix.TCSETS, old)
	}, nil
}
