package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// receiveFD reads one descriptor sent over a unix socket.
func receiveFD(sock *os.File) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("no descriptor in message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("no descriptor in message (%v)", err)
	}
	return os.NewFile(uintptr(fds[0]), "pty"), nil
}

// copyTerminal copies the workload's terminal output to w until the last
// process holding the terminal is gone; a pty's master reads EIO then.
func copyTerminal(w io.Writer, master *os.File) {
	if w == nil {
		w = io.Discard
	}
	_, err := io.Copy(w, master)
	if err != nil && !errors.Is(err, syscall.EIO) {
		return
	}
}

// ResizeTTY sets the size of the sandbox's terminal, when it has one.
func (s *Sandbox) ResizeTTY(rows, cols uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptyMaster == nil {
		return errors.New("sandbox has no terminal")
	}
	return unix.IoctlSetWinsize(int(s.ptyMaster.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}
