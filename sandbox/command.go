package sandbox

import (
	"errors"
	"fmt"
	"strings"
)

// command is the workload's command line, put together from o's
// Entrypoint and Args and the image's entrypoint and cmd as Docker does:
// an Entrypoint of the caller's replaces the image's and drops the
// image's Cmd as well, whose arguments were meant for the image's own
// entrypoint; Args replace only the Cmd. An empty, non-nil Entrypoint
// clears the image's, leaving Args, or the image's Cmd when Args is
// empty.
func command(o *Options, entrypoint, cmd []string) ([]string, error) {
	if o.Entrypoint != nil {
		entrypoint = o.Entrypoint
		if len(o.Entrypoint) > 0 {
			cmd = nil
		}
	}
	if len(o.Args) > 0 {
		cmd = o.Args
	}
	args := append(append([]string(nil), entrypoint...), cmd...)
	switch {
	case len(args) == 0:
		return nil, fmt.Errorf("%w: no command: the image has no Entrypoint or Cmd, and Options.Entrypoint and Args give none", ErrInvalidOptions)
	case args[0] == "":
		return nil, fmt.Errorf("%w: no command: the program, the first word of the command line, is empty", ErrInvalidOptions)
	}
	return args, nil
}

// checkCommand checks Options.Entrypoint and Args. Whether an empty first
// word of Args is the program or an argument to the image's entrypoint
// is known only once the image is (command checks it then), unless
// Entrypoint says.
func checkCommand(entrypoint, args []string) error {
	switch {
	case len(entrypoint) > 0 && entrypoint[0] == "":
		return errors.New("Entrypoint[0] is empty: no program to run")
	case entrypoint != nil && len(entrypoint) == 0 && len(args) > 0 && args[0] == "":
		return errors.New("Args[0] is empty, and Entrypoint clears the image's: no program to run")
	}
	if err := checkWords("Entrypoint", entrypoint); err != nil {
		return err
	}
	return checkWords("Args", args)
}

// checkWords refuses a word with a NUL, where the kernel would cut it.
func checkWords(name string, words []string) error {
	for i, w := range words {
		if strings.IndexByte(w, 0) >= 0 {
			return fmt.Errorf("%s[%d] %s contains a NUL byte", name, i, quoteShort(w))
		}
	}
	return nil
}
