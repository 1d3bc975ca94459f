package battery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/sandbox"
)

// etcLinkCases are hostile images rather than hostile workloads: their
// /etc/resolv.conf, /etc/hosts and /etc/hostname, which berth binds its
// own files over, are symbolic links to the host's files and to the
// kernel's settings. berth resolves such links inside the rootfs, so
// that neither its start nor the workload, writing through the links,
// reaches what they name on the host.
func etcLinkCases() []hostile {
	return []hostile{{
		name: "etc-links-to-host",
		attacks: "ships an image whose /etc/resolv.conf, /etc/hosts and /etc/hostname link to a host file, " +
			"a host path that does not exist and /proc/sys/kernel/core_pattern, and writes through them",
		run:   runEtcLinks,
		judge: func(*attempt) string { return "" }, // the host checks say what leaked
	}}
}

// runEtcLinks imports the hostile image into the battery's store and
// runs a workload that reads and appends to the three files.
func runEtcLinks(t *testing.T, a *attempt) {
	host := searchableTempDir(t)
	secret := filepath.Join(host, "secret")
	before := "HOST-SECRET " + a.marker + "\n"
	if err := os.WriteFile(secret, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(host, "made-by-berth")
	const corePattern = "/proc/sys/kernel/core_pattern"
	core, err := os.ReadFile(corePattern)
	if err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"etc/resolv.conf": "../../../../../../../.." + secret,
		"etc/hosts":       missing,
		"etc/hostname":    corePattern,
	}
	ref := "alpine-etclinks-" + a.marker + ":test"
	ctx, cancel := context.WithTimeout(context.Background(), attackerTimeout)
	defer cancel()
	if err := testenv.ImportAlpineWith(ctx, env.store, ref, testenv.Symlinks(links)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.store.Remove(context.Background(), ref) })

	a.opts.Args = []string{"/bin/sh", "-c", `for f in resolv.conf hosts hostname; do
		cat /etc/$f
		echo "PWNED ` + a.marker + `" >> /etc/$f
	done`}
	a.opts.Stdout, a.opts.Stderr = &a.stdout, &a.stderr
	a.res, err = sandbox.New(ref, a.opts).Run(ctx)
	if err != nil {
		// Refusing the image reaches nothing of the host's either; the
		// sandbox package's tests ask that such images start.
		t.Logf("the image was refused: %v", err)
	}
	a.check(func() string {
		if strings.Contains(a.stdout.String(), "HOST-SECRET") {
			return "the workload read the host's file through /etc/resolv.conf: " + a.stdout.String()
		}
		return ""
	})
	a.check(func() string {
		if got, err := os.ReadFile(secret); err != nil || string(got) != before {
			return fmt.Sprintf("the host's file %s now reads %q (%v)", secret, got, err)
		}
		return ""
	})
	a.check(func() string {
		if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
			return fmt.Sprintf("%s was made on the host (%v)", missing, err)
		}
		return ""
	})
	a.check(func() string {
		if got, err := os.ReadFile(corePattern); err != nil || string(got) != string(core) {
			return fmt.Sprintf("the host's core_pattern now reads %q (%v)", got, err)
		}
		return ""
	})
}
