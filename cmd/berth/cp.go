package main

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-dev/berth/sandbox"
)

func newCopyCommand(g *globals) *cobra.Command {
	var o sandbox.CopyOptions
	cmd := &cobra.Command{
		Use: "cp [-a] [-L] SANDBOX:PATH HOSTPATH|-",
		Example: `  berth cp 3f2a:/var/log/app.log .
  berth cp -a ./config 3f2a:/etc/app
  berth cp 3f2a:/data - | tar -tv
  tar -c dir | berth cp - 3f2a:/srv`,
		Short: "Copy files between a running sandbox and the host",
		Long: `Copy files between a running sandbox and the host, as docker cp does.

SANDBOX is a running sandbox's ID or a unique prefix of it; its PATH is
resolved inside the sandbox (relative paths from its /), so a symbolic
link the workload made never leads the copy to the host's files. Links
are copied as links. A "-" for the host's side is a tar stream on
standard output (copying out) or standard input (copying in; PATH must
then be a directory). A host path with a colon needs a "/" before it
("./a:b"). Named pipes, sockets and devices are left out, with a warning.

Copied into a sandbox, files belong to its root, without setuid and
setgid bits; copied out, to the user running berth. -a keeps owners
(and, into a sandbox, setuid and setgid bits).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcID, srcPath, srcRemote := splitCopyArg(args[0])
			dstID, dstPath, dstRemote := splitCopyArg(args[1])
			switch {
			case srcRemote && dstRemote:
				return usageError{errors.New("berth cp: copying between two sandboxes is not supported: one side must be the host")}
			case !srcRemote && !dstRemote:
				return usageError{errors.New("berth cp: one side must be a sandbox's path, as SANDBOX:PATH")}
			}
			id, inPath := srcID, srcPath
			if dstRemote {
				id, inPath = dstID, dstPath
			}
			if inPath == "" {
				return usageError{fmt.Errorf("berth cp: sandbox %s: no path in the sandbox (SANDBOX:PATH)", id)}
			}
			inPath = sandboxPath(inPath)
			if f, ok := cmd.OutOrStdout().(*os.File); ok && srcRemote && dstPath == "-" && term.IsTerminal(int(f.Fd())) {
				// The stream holds the workload's names and bytes,
				// which a terminal would take for its own controls.
				return usageError{errors.New("berth cp: standard output is a terminal: redirect the tar stream to a file or a pipe")}
			}
			opts, err := g.sandboxOptions()
			if err != nil {
				return err
			}
			sb, err := sandbox.Open(cmd.Context(), sandboxRef(g.state, id), opts)
			if err != nil {
				return err
			}
			defer sb.Close()
			ctx := cmd.Context()
			switch {
			case srcRemote && dstPath == "-":
				return sb.CopyFromTar(ctx, inPath, cmd.OutOrStdout(), &o)
			case srcRemote:
				return sb.CopyFrom(ctx, inPath, dstPath, &o)
			case srcPath == "-":
				return sb.CopyToTar(ctx, cmd.InOrStdin(), inPath, &o)
			default:
				return sb.CopyTo(ctx, srcPath, inPath, &o)
			}
		},
	}
	cmd.Flags().BoolVarP(&o.Archive, "archive", "a", false, "keep owners (and, into a sandbox, setuid and setgid bits)")
	cmd.Flags().BoolVarP(&o.FollowLink, "follow-link", "L", false, "copy what the source path names if it is a symbolic link")
	return cmd
}

// sandboxPath makes p, a path in the sandbox, absolute: relative paths
// start from its root. A trailing "/", which says the path must be a
// directory, is kept.
func sandboxPath(p string) string {
	abs := path.Join("/", p)
	if strings.HasSuffix(p, "/") && abs != "/" {
		abs += "/"
	}
	return abs
}

// splitCopyArg tells SANDBOX:PATH from a host path, as docker cp does: a
// colon makes it a sandbox's unless a "/" comes before it.
func splitCopyArg(arg string) (id, p string, remote bool) {
	if arg == "-" || strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") {
		return "", arg, false
	}
	before, after, ok := strings.Cut(arg, ":")
	if !ok || strings.Contains(before, "/") || before == "" {
		return "", arg, false
	}
	return before, after, true
}
