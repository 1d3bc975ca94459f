package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/berth-dev/berth/registry"
)

const loginLong = `Log in to a registry, and keep the credentials where Docker keeps them.

SERVER is a registry's host[:port], Docker Hub if none is given. The
credentials are checked with the registry first, then kept in Docker's
configuration ($DOCKER_CONFIG or ~/.docker/config.json, mode 0600), or in
the credential helper it names, where pull, push and Docker find them.

The password is asked for on the terminal, without echo, or read from
standard input with --password-stdin. -p PASSWORD, which Docker takes
with a warning, is refused: a password on the command line can be read by
every user of the host (ps, /proc) and stays in the shell's history.`

// maxPasswordSize bounds what --password-stdin reads: a registry token
// is a few KiB at most, and standard input may be anything.
const maxPasswordSize = 64 << 10

func newLoginCommand() *cobra.Command {
	var (
		user, password          string
		passwordStdin, insecure bool
	)
	cmd := &cobra.Command{
		Use:   "login [flags] [SERVER]",
		Short: "Log in to a registry (Docker Hub by default)",
		Long:  loginLong,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("password") {
				return invalidFlag("-p/--password: refused, a password on the command line is visible to every user of the host; pipe it to --password-stdin, or leave it out to be asked")
			}
			server := ""
			if len(args) == 1 {
				server = args[0]
			}
			var err error
			if passwordStdin {
				if user == "" {
					return invalidFlag("--password-stdin needs --username (-u)")
				}
				password, err = readPassword(cmd.InOrStdin())
			} else {
				user, password, err = askCredentials(cmd.Context(), cmd.InOrStdin(), cmd.ErrOrStderr(), user)
			}
			if err != nil {
				return err
			}
			// Login's errors name the registry, and never the password.
			if err := registry.Login(cmd.Context(), server, user, password, &registry.Options{Insecure: insecure}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s\n", serverName(server))
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "username", "u", "", "user name (asked for on the terminal if not given)")
	cmd.Flags().StringVarP(&password, "password", "p", "", "refused: use --password-stdin, or be asked")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password (or token) from standard input")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP, and TLS without verification, for this registry (loopback registries need not be marked)")
	return cmd
}

func newLogoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout [SERVER]",
		Short: "Forget the credentials kept for a registry (Docker Hub by default)",
		Long: `Forget the credentials kept for a registry (Docker Hub by default).

They are erased from Docker's configuration, or from the credential helper
it names for SERVER. A registry berth has no credentials for is not an
error: logout says so and exits 0, as Docker's does.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server := ""
			if len(args) == 1 {
				server = args[0]
			}
			// Not being logged in is what logout is for, so it is
			// no failure, as with Docker: scripts may log out
			// whatever the state.
			err := registry.Logout(server, nil)
			if errors.Is(err, registry.ErrNotLoggedIn) {
				fmt.Fprintf(cmd.OutOrStdout(), "not logged in to %s\n", serverName(server))
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged out of %s\n", serverName(server))
			return nil
		},
	}
}

// serverName is how messages name the registry SERVER gave.
func serverName(server string) string {
	if server == "" {
		return "docker.io"
	}
	return server
}

// readPassword reads a password from r, as `echo $TOKEN | berth login
// --password-stdin` gives it: everything, less the line ending.
func readPassword(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPasswordSize+1))
	if err != nil {
		return "", fmt.Errorf("--password-stdin: %w", err)
	}
	if len(b) > maxPasswordSize {
		return "", invalidFlag("--password-stdin: more than %d KiB on standard input; that is no password", maxPasswordSize>>10)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", invalidFlag("--password-stdin: standard input holds no password")
	}
	return string(b), nil
}

// errNoTerminal is why berth cannot ask for credentials.
var errNoTerminal = errors.New("standard input is not a terminal to ask for the password on; pipe it to --password-stdin with -u USER")

// askCredentials asks for the user name (unless given) and the password
// on the terminal that in is, the password without echo; the prompts go
// to prompt. Ctrl-C, which ends ctx, stops it.
func askCredentials(ctx context.Context, in io.Reader, prompt io.Writer, user string) (string, string, error) {
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", "", usageError{errNoTerminal}
	}
	if user == "" {
		fmt.Fprint(prompt, "Username: ")
		line, err := readLine(ctx, f, 1024)
		if err != nil {
			return "", "", fmt.Errorf("user name: %w", err)
		}
		if user = strings.TrimSpace(line); user == "" {
			return "", "", usageError{errors.New("no user name given")}
		}
	}
	pw, err := readHidden(ctx, f, prompt, "Password: ")
	if err != nil {
		return "", "", fmt.Errorf("password: %w", err)
	}
	if pw == "" {
		return "", "", usageError{errors.New("no password given")}
	}
	return user, pw, nil
}

// readHidden turns the terminal f's echo off, then prompts, then reads a
// line: in that order, so that what is typed once the prompt shows is
// never echoed, however quickly it comes. The terminal is restored
// whatever happens.
func readHidden(ctx context.Context, f *os.File, prompt io.Writer, text string) (string, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", err
	}
	hidden := *old
	hidden.Lflag &^= unix.ECHO
	hidden.Lflag |= unix.ICANON | unix.ISIG
	hidden.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &hidden); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(prompt, text)
	line, err := readLine(ctx, f, maxPasswordSize)
	fmt.Fprintln(prompt)
	return line, err
}

// readLine reads one line of at most max bytes from the terminal f, a
// byte at a time so that nothing after it is read ahead and lost. It
// returns when ctx ends, leaving the read to finish when berth exits.
func readLine(ctx context.Context, f *os.File, max int) (string, error) {
	type result struct {
		line []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var line []byte
		b := make([]byte, 1)
		for len(line) <= max {
			n, err := f.Read(b)
			if n == 1 && b[0] == '\n' {
				break
			}
			line = append(line, b[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				done <- result{err: err}
				return
			}
		}
		done <- result{line: line}
	}()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case r := <-done:
		if r.err != nil {
			return "", r.err
		}
		if len(r.line) > max {
			return "", usageError{fmt.Errorf("longer than %d bytes", max)}
		}
		return strings.TrimSuffix(string(r.line), "\r"), nil
	}
}
