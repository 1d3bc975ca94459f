package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// A sandbox's name (Options.Name) is a symbolic link in the state root's
// names directory, named after it and pointing at the sandbox's ID:
//
//	<state>/names/db -> 0123456789abcdef
//
// symlink(2) fails if the name exists, so of two starts that ask for one
// name at once exactly one makes the link: the kernel decides, not a
// check followed by a write. A link outlives an owner that was killed;
// it is stale once the state directory it points at has no owner (its
// owner lock, ownerlock.go, is free or the directory is gone). The owner
// makes its link only after locking its state directory, and removes it
// before unlocking it, so a link whose directory is unlocked is stale for
// good. Stale links are removed only under the exclusive root lock, by a
// start that wants the name and by Recover, so that two of them never
// take each other's new link for the old one.

// namesDir is the directory of name links in the state root.
const namesDir = "names"

// MaxNameLength is the longest Options.Name.
const MaxNameLength = 128

// nameRE is what a name may be: Docker's rule. It leaves no room for a
// path ("/", ".." as a whole), a space, a newline or anything a terminal
// would interpret.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// checkName checks Options.Name.
func checkName(name string) error {
	switch {
	case len(name) > MaxNameLength:
		return fmt.Errorf("Name %s is longer than %d bytes", quoteShort(name), MaxNameLength)
	case !nameRE.MatchString(name):
		return fmt.Errorf("Name %s: a name has only letters, digits, '_', '.' and '-', and starts with a letter or digit", quoteShort(name))
	}
	return nil
}

// Bounds on Options.Labels: they are copied into every listing of the
// sandbox, so a caller's mistake must not make each listing megabytes.
const (
	maxLabelKey    = 256
	maxLabelValue  = 4096
	maxLabelsBytes = 64 << 10
)

// checkLabels checks Options.Labels. Keys are non-empty and have no '='
// (they are written KEY=VALUE); neither keys nor values may hold control
// characters or invalid UTF-8, since listings print them one per line
// and a newline or an escape sequence in one could forge another entry.
func checkLabels(labels map[string]string) error {
	total := 0
	for k, v := range labels {
		switch {
		case k == "":
			return errors.New("Labels: an empty key")
		case len(k) > maxLabelKey:
			return fmt.Errorf("Labels: key %s is longer than %d bytes", quoteShort(k), maxLabelKey)
		case len(v) > maxLabelValue:
			return fmt.Errorf("Labels[%s]: the value is longer than %d bytes", quoteShort(k), maxLabelValue)
		case !printable(k) || strings.ContainsRune(k, '='):
			return fmt.Errorf("Labels: key %s has '=', a control character or invalid UTF-8", quoteShort(k))
		case !printable(v):
			return fmt.Errorf("Labels[%s]: the value has a control character or invalid UTF-8", quoteShort(k))
		}
		total += len(k) + len(v)
	}
	if total > maxLabelsBytes {
		return fmt.Errorf("Labels: %d bytes in all, more than %d", total, maxLabelsBytes)
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// claimName makes the name link of the sandbox id, whose state directory
// its caller has locked. A live sandbox with the name makes it fail with
// ErrNameInUse; a stale link is removed and the claim tried again.
func claimName(root, name, id string) error {
	link := filepath.Join(root, namesDir, name)
	for attempt := 0; ; attempt++ {
		err := makeNameLink(id, link)
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("name %s: %w", name, err)
		}
		if attempt > 0 {
			// Freed and taken again by another start meanwhile.
			return fmt.Errorf("name %s: %w", name, ErrNameInUse)
		}
		freed, err := freeStaleName(root, name)
		if err != nil {
			return fmt.Errorf("name %s: %w", name, err)
		}
		if !freed {
			return fmt.Errorf("name %s: %w", name, ErrNameInUse)
		}
	}
}

// makeNameLink makes the link, and the names directory if need be: it
// may be missing, never made or removed with the last name just now
// (removeNamesDirIfEmpty).
func makeNameLink(id, link string) error {
	var err error
	for range 3 {
		if err = os.Symlink(id, link); !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Mkdir(filepath.Dir(link), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("names directory: %w", err)
		}
	}
	return err
}

// freeStaleName removes the link of name if the sandbox it names has no
// owner. It reports whether the name is free.
func freeStaleName(root, name string) (bool, error) {
	rl, err := lockRoot(root, unix.LOCK_EX)
	if err != nil {
		return false, err
	}
	defer rl.Close()
	return removeIfStale(root, name)
}

// removeIfStale removes the link of name if it is stale (see above); the
// caller holds the exclusive root lock. It reports whether the name is
// free.
func removeIfStale(root, name string) (bool, error) {
	link := filepath.Join(root, namesDir, name)
	id, err := os.Readlink(link)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		// Not a link: nothing berth made, and no name to honour.
		if !errors.Is(err, unix.EINVAL) {
			return false, err
		}
	} else if sandboxIDRE.MatchString(id) && owned(filepath.Join(root, id)) {
		return false, nil
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// owned reports whether the state directory dir has a live owner. A lock
// that cannot be tested counts as owned: it is no proof of death.
func owned(dir string) bool {
	lock, err := tryOwnerLock(dir, unix.LOCK_SH)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if lock != nil {
		lock.Close()
		return false
	}
	return true
}

// releaseName removes the name link of the sandbox id, if it still
// points at it. The caller still holds the sandbox's owner lock, so no
// one else removes the link meanwhile.
func releaseName(root, name, id string) error {
	link := filepath.Join(root, namesDir, name)
	if target, err := os.Readlink(link); err != nil || target != id {
		return nil
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release name %s: %w", name, err)
	}
	removeNamesDirIfEmpty(root)
	return nil
}

// removeNamesDirIfEmpty removes the names directory once it holds no
// name, so that a state directory whose sandboxes are gone holds nothing
// of theirs. rmdir(2) fails on a directory that is not empty, and a claim
// that finds the directory gone makes it again (claimName).
func removeNamesDirIfEmpty(root string) {
	os.Remove(filepath.Join(root, namesDir))
}

// sweepNames removes the stale name links of the state root, for Recover.
func sweepNames(root string) error {
	entries, err := os.ReadDir(filepath.Join(root, namesDir))
	if errors.Is(err, fs.ErrNotExist) || len(entries) == 0 {
		return nil
	}
	if err != nil {
		return err
	}
	rl, err := lockRoot(root, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer rl.Close()
	var errs []error
	for _, e := range entries {
		if _, err := removeIfStale(root, e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("name %s: %w", e.Name(), err))
		}
	}
	removeNamesDirIfEmpty(root)
	return errors.Join(errs...)
}

// lookupName returns the ID of the sandbox the name link of name points
// at, or "" if there is none.
func lookupName(root, name string) string {
	if checkName(name) != nil {
		return ""
	}
	id, err := os.Readlink(filepath.Join(root, namesDir, name))
	if err != nil || !sandboxIDRE.MatchString(id) {
		return ""
	}
	return id
}

// claimName takes Options.Name, if set, for s, whose state directory is
// locked; the name is given back just before the directory goes.
func (s *Sandbox) claimName() error {
	name := s.opts.Name
	if name == "" {
		return nil
	}
	if err := claimName(s.stateRoot(), name, s.id); err != nil {
		return err
	}
	root, id := s.stateRoot(), s.id
	s.undo = append(s.undo, s.hold.untilClose(func() error { return releaseName(root, name, id) }))
	return nil
}

func checkNameAndLabels(o *Options) error {
	if o.Name != "" {
		if err := checkName(o.Name); err != nil {
			return err
		}
	}
	return checkLabels(o.Labels)
}
