package security

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/selinux/go-selinux"
	"golang.org/x/sys/unix"
)

// attrHelperSource makes the writes of an LSMPlan the way berth's init
// does, one open and one write each with nothing added, then execs a
// program, so that a test sees what the kernel makes of the plan.
const attrHelperSource = `
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* attrhelper [PATH DATA]... -- PROGRAM [ARG]... */
int main(int argc, char **argv) {
	int i = 1;
	for (; i + 1 < argc && strcmp(argv[i], "--") != 0; i += 2) {
		int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "attrhelper: open %s: %s\n", argv[i], strerror(errno));
			return 125;
		}
		size_t n = strlen(argv[i + 1]);
		ssize_t w = write(fd, argv[i + 1], n);
		if (w < 0 || (size_t)w != n) {
			fprintf(stderr, "attrhelper: write %s to %s: %s\n", argv[i + 1], argv[i],
				w < 0 ? strerror(errno) : "short write");
			return 125;
		}
		close(fd);
	}
	if (i + 1 >= argc || strcmp(argv[i], "--") != 0) {
		fprintf(stderr, "usage: attrhelper [PATH DATA]... -- PROGRAM [ARG]...\n");
		return 125;
	}
	execv(argv[i + 1], argv + i + 1);
	fprintf(stderr, "attrhelper: exec %s: %s\n", argv[i + 1], strerror(errno));
	return 127;
}
`

// buildAttrHelper compiles attrHelperSource, or skips the test if there is
// no C compiler.
func buildAttrHelper(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc) to build the attribute-writing helper")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "attrhelper.c")
	bin := filepath.Join(dir, "attrhelper")
	if err := os.WriteFile(src, []byte(attrHelperSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-O2", "-Wall", "-Werror", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("compiling the helper: %v\n%s", err, out)
	}
	return bin
}

// runWithWrites runs prog with args through the helper after the writes
// and returns what it printed.
func runWithWrites(helper string, writes []AttrWrite, prog string, args ...string) (string, error) {
	var argv []string
	for _, w := range writes {
		argv = append(argv, w.Path, w.Data)
	}
	argv = append(argv, "--", prog)
	argv = append(argv, args...)
	cmd := exec.Command(helper, argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %q: %w: %s", helper, argv, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// TestAttrHelper checks the helper itself on any host, so that the
// enforcement tests below are known to work where they do not skip.
func TestAttrHelper(t *testing.T) {
	helper := buildAttrHelper(t)
	file := filepath.Join(t.TempDir(), "attr")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	const data = "system_u:system_r:container_t:s0:c1,c2"
	out, err := runWithWrites(helper, []AttrWrite{{file, data}}, "/bin/cat", file)
	if err != nil {
		t.Fatal(err)
	}
	if out != data {
		t.Errorf("the helper wrote %q, want %q", out, data)
	}
}

// TestExecWritesNeedTheModule shows why PlanLSM refuses labels the host
// cannot apply: without SELinux or AppArmor the kernel rejects the write,
// and the workload would fail to start with nothing but EINVAL to say why.
func TestExecWritesNeedTheModule(t *testing.T) {
	host := DetectHostLSM()
	if host.SELinux || host.AppArmor {
		t.Skip("this host has SELinux or AppArmor; the enforcement tests cover it")
	}
	helper := buildAttrHelper(t)
	// Plans made as if the host had the module.
	for _, c := range []struct {
		o LSMOptions
		h HostLSM
	}{
		{LSMOptions{SELinuxLabel: testProcLabel}, HostLSM{SELinux: true}},
		{LSMOptions{AppArmorProfile: "berth-default"}, HostLSM{AppArmor: true, AppArmorExecAttr: appArmorExecAttr}},
		{LSMOptions{AppArmorProfile: "berth-default"}, HostLSM{AppArmor: true}},
	} {
		plan, err := PlanLSM(c.o, c.h)
		if err != nil {
			t.Fatal(err)
		}
		_, err = runWithWrites(helper, plan.ExecWrites, "/bin/true")
		if err == nil {
			t.Errorf("writing %q succeeded on a host without the module", plan.ExecWrites)
			continue
		}
		t.Logf("as expected: %v", err)
	}
}

// TestSELinuxEnforced starts a program with the plan's writes and checks
// the kernel gave it the label, then mounts a tmpfs with the plan's mount
// option and checks its label. It needs a policy with container-selinux's
// types, or BERTH_TEST_SELINUX_LABEL (and _MOUNT_LABEL) naming a domain
// this process may move to and a file type for it.
func TestSELinuxEnforced(t *testing.T) {
	host := DetectHostLSM()
	if !host.SELinux {
		t.Skip("SELinux is not enabled on this host: " + host.SELinuxWhy)
	}
	helper := buildAttrHelper(t)
	o := LSMOptions{
		SELinuxLabel:      envOr("BERTH_TEST_SELINUX_LABEL", testProcLabel),
		SELinuxMountLabel: os.Getenv("BERTH_TEST_SELINUX_MOUNT_LABEL"),
	}
	plan, err := PlanLSM(o, host)
	if err != nil {
		t.Fatal(err)
	}
	mountLabel := strings.TrimSuffix(strings.TrimPrefix(plan.MountOption, `context="`), `"`)
	for _, l := range []string{o.SELinuxLabel, mountLabel} {
		// The kernel checks a context against the loaded policy when it
		// is written to selinuxfs's context file.
		if _, err := selinux.CanonicalizeContext(l); err != nil {
			t.Skipf("the loaded policy does not accept %q (%v); set BERTH_TEST_SELINUX_LABEL and BERTH_TEST_SELINUX_MOUNT_LABEL", l, err)
		}
	}

	t.Run("process", func(t *testing.T) {
		out, err := runWithWrites(helper, plan.ExecWrites, "/bin/cat", "/proc/self/attr/current")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.TrimRight(out, "\x00\n")
		want, _ := selinux.CanonicalizeContext(o.SELinuxLabel)
		if got != want {
			t.Errorf("the program runs as %q, want %q", got, want)
		}
	})

	t.Run("mount", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("mounting a tmpfs needs root")
		}
		dir := t.TempDir()
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, plan.MountData("size=64k")); err != nil {
			t.Fatalf("mount tmpfs with %q: %v", plan.MountData("size=64k"), err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
		got, err := selinux.FileLabel(dir)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := selinux.CanonicalizeContext(mountLabel)
		if got != want {
			t.Errorf("the tmpfs is labelled %q, want %q", got, want)
		}
	})
}

// TestAppArmorEnforced starts a program with the plan's writes and checks
// the kernel confined it to the profile. The profile is
// BERTH_TEST_APPARMOR_PROFILE if set, else one the test loads (as root,
// with apparmor_parser) and removes.
func TestAppArmorEnforced(t *testing.T) {
	host := DetectHostLSM()
	if !host.AppArmor {
		t.Skip("AppArmor is not enabled on this host: " + host.AppArmorWhy)
	}
	helper := buildAttrHelper(t)
	profile := os.Getenv("BERTH_TEST_APPARMOR_PROFILE")
	if profile == "" {
		profile = loadTestProfile(t)
	}
	plan, err := PlanLSM(LSMOptions{AppArmorProfile: profile}, host)
	if err != nil {
		t.Fatal(err)
	}
	current := "/proc/self/attr/current"
	if host.AppArmorExecAttr == appArmorExecAttr {
		current = "/proc/self/attr/apparmor/current"
	}
	out, err := runWithWrites(helper, plan.ExecWrites, "/bin/cat", current)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel shows "NAME (MODE)".
	if got, _, _ := strings.Cut(strings.TrimRight(out, "\x00\n"), " ("); got != profile {
		t.Errorf("the program runs under %q, want profile %q", out, profile)
	}
}

// loadTestProfile loads a profile that allows all file access, enough for
// cat to run and read its own attributes, and removes it when the test
// ends.
func loadTestProfile(t *testing.T) string {
	t.Helper()
	parser, err := exec.LookPath("apparmor_parser")
	if err != nil {
		t.Skip("no apparmor_parser to load a test profile; set BERTH_TEST_APPARMOR_PROFILE to a loaded one")
	}
	if os.Geteuid() != 0 {
		t.Skip("loading a test profile needs root; set BERTH_TEST_APPARMOR_PROFILE to a loaded one")
	}
	name := fmt.Sprintf("berth-lsm-test-%d", os.Getpid())
	text := fmt.Sprintf("profile %s flags=(attach_disconnected) {\n  file,\n}\n", name)
	load := exec.Command(parser, "--replace")
	load.Stdin = strings.NewReader(text)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("apparmor_parser --replace: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		rm := exec.Command(parser, "--remove")
		rm.Stdin = strings.NewReader(text)
		if out, err := rm.CombinedOutput(); err != nil {
			t.Errorf("apparmor_parser --remove: %v\n%s", err, out)
		}
	})
	return name
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
