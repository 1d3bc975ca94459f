package netplug

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// libcni keeps the result of each attachment it completed in a cache
// entry, RunDir/cache/results/<CNI network>-<id>-<interface>, which it
// writes in place: an Attach killed while it writes leaves an empty file.
// libcni removes an entry only in a DEL it runs itself, which netplug
// does not always do (see delWithResult), so netplug removes the entries
// of what it detaches, and Prune those that outlived their attachment.

func (n *Networks) cacheResultsDir() string {
	return filepath.Join(n.opts.RunDir, "cache", "results")
}

// forgetCached removes libcni's cache entry of the attachment of id to
// the CNI network cniName on ifName, if it is there.
func (n *Networks) forgetCached(cniName, id, ifName string) error {
	err := os.Remove(filepath.Join(n.cacheResultsDir(), cniName+"-"+id+"-"+ifName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// pruneCache removes the cache entries of berth's bridge networks whose
// attachment has no record. The caller holds the state lock exclusively:
// no Attach is under way, and an Attach makes its record before libcni
// writes the entry, while Detach removes the entry before the record. So
// an entry without a record was left by a program that died. Custom
// networks' entries, which libcni may share the directory with, are left
// alone: their names never start with "berth" (see Custom).
func (n *Networks) pruneCache() error {
	entries, err := os.ReadDir(n.cacheResultsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "berth") || !e.Type().IsRegular() || n.cacheHasRecord(name) {
			continue
		}
		if err := os.Remove(filepath.Join(n.cacheResultsDir(), name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n.log.Info("removed a CNI cache entry that outlived its attachment", "entry", name)
	}
	return errors.Join(errs...)
}

// cacheHasRecord reports whether the cache entry called name, of a berth
// network, belongs to an attachment that has a record. Network names and
// IDs both contain dashes, so every way of splitting the name into
// <CNI network>-<id>-<interface> is tried; any doubt keeps the entry.
func (n *Networks) cacheHasRecord(name string) bool {
	base, ok := strings.CutSuffix(name, "-"+ifName)
	if !ok {
		return true // not an interface berth makes: not berth's to remove
	}
	for i := strings.IndexByte(base, '-'); i >= 0; {
		cniName, id := base[:i], base[i+1:]
		if idRE.MatchString(id) {
			if _, err := os.Lstat(n.recordPath(cniName, id)); !errors.Is(err, fs.ErrNotExist) {
				return true
			}
		}
		j := strings.IndexByte(base[i+1:], '-')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return false
}
