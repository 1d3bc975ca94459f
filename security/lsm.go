package security

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/opencontainers/selinux/go-selinux"
	"github.com/opencontainers/selinux/go-selinux/label"
	"golang.org/x/sys/unix"
)

// LSMOptions ask for Linux Security Module labels for a sandbox.
type LSMOptions struct {
	// SELinuxLabel is the process label the workload runs with, such as
	// "system_u:system_r:container_t:s0:c100,c200". Empty leaves the
	// workload in whatever domain execve gives it. Under no_new_privs the
	// policy must also allow the change as an nnp_transition.
	SELinuxLabel string

	// SELinuxMountLabel labels the filesystems the sandbox mounts for
	// itself (/dev, /dev/shm, /dev/pts, /dev/mqueue, its tmpfs mounts).
	// If it is empty and SELinuxLabel is set, it is derived as
	// "system_u:object_r:container_file_t:<level>" with the level of
	// SELinuxLabel, which is what the container-selinux policy expects of
	// a container_t workload: the workload can use its own files and,
	// through the categories, no other sandbox's. A workload in some other
	// domain needs the matching file type given here.
	SELinuxMountLabel string

	// AppArmorProfile is the profile the workload changes to at execve,
	// such as "berth-default". The profile must already be loaded.
	// "unconfined" and empty mean no change. Under no_new_privs AppArmor
	// lets an unconfined process change to any profile, but a confined one
	// only stack another ("&name").
	AppArmorProfile string

	// BestEffort makes a label the host cannot apply a warning in the
	// plan instead of an error. Malformed labels are errors regardless.
	BestEffort bool
}

// ErrLSMUnavailable is what asking for a label the host cannot apply wraps.
var ErrLSMUnavailable = errors.New("security module not available on this host")

// ErrInvalidLSMLabel is what a malformed SELinux label or AppArmor profile
// name wraps.
var ErrInvalidLSMLabel = errors.New("invalid LSM label")

// LSMUnavailableError says a label was asked for from a security module the
// host does not have enabled.
type LSMUnavailableError struct {
	LSM    string // "SELinux" or "AppArmor"
	Reason string // what the host showed; may be empty
}

func (e *LSMUnavailableError) Error() string {
	what := "label"
	if e.LSM == lsmAppArmor {
		what = "profile"
	}
	msg := fmt.Sprintf("%s %s requested but %s is not enabled on this host", e.LSM, what, e.LSM)
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg
}

// Is reports whether target is ErrLSMUnavailable.
func (e *LSMUnavailableError) Is(target error) bool { return target == ErrLSMUnavailable }

// InvalidLabelError says an SELinux label or AppArmor profile name is
// malformed.
type InvalidLabelError struct {
	LSM    string // "SELinux" or "AppArmor"
	What   string // "label", "mount label" or "profile"
	Label  string // as given
	Reason string
}

func (e *InvalidLabelError) Error() string {
	return fmt.Sprintf("invalid %s %s %q: %s", e.LSM, e.What, e.Label, e.Reason)
}

// Is reports whether target is ErrInvalidLSMLabel.
func (e *InvalidLabelError) Is(target error) bool { return target == ErrInvalidLSMLabel }

// AttrWrite is one write to a /proc attribute file.
type AttrWrite struct {
	Path string
	Data string
}

// LSMPlan is what the sandbox's init must do to apply an LSMOptions.
type LSMPlan struct {
	// ExecWrites are made, in order, by the thread that then calls
	// execve for the workload, with nothing exec'd in between: the kernel
	// forgets an exec attribute at every execve. Each is open(O_WRONLY),
	// one write(2) of exactly Data (no terminator; both modules accept
	// that), close. A failed write must fail the start, since going on
	// would run the workload unconfined.
	//
	// Every Path is under /proc/thread-self/attr. If the workload could
	// have changed the mount namespace before the writes (as when joining
	// a running sandbox), a mount over the file could take a write and
	// leave the new process unconfined; the init should then reach the
	// file through a procfs of its own (fsopen or open_tree), not the
	// sandbox's /proc.
	ExecWrites []AttrWrite

	// MountOption is added to the data of the mounts the sandbox makes
	// for itself, such as `context="system_u:object_r:container_file_t:s0:c1,c2"`.
	// The quotes keep the commas of the level from ending the option;
	// SELinux removes them before it reads the label. Empty for none.
	// MountData adds it.
	MountOption string

	// Warnings say which labels were skipped because of BestEffort.
	Warnings []string
}

// MountData returns mount(2) data with p.MountOption added to data. The
// kernel refuses a second SELinux context option, so data must not carry
// one of its own. A nil plan adds nothing.
func (p *LSMPlan) MountData(data string) string {
	switch {
	case p == nil || p.MountOption == "":
		return data
	case data == "":
		return p.MountOption
	}
	return data + "," + p.MountOption
}

// HostLSM describes the security modules the host has. DetectHostLSM
// fills it from the running kernel.
type HostLSM struct {
	// SELinux is whether SELinux is enabled with a policy loaded.
	SELinux bool
	// SELinuxWhy says what showed SELinux to be off, for error messages.
	SELinuxWhy string

	// AppArmor is whether AppArmor is enabled and its securityfs
	// directory is there.
	AppArmor bool
	// AppArmorWhy says what showed AppArmor to be off, for error messages.
	AppArmorWhy string
	// AppArmorExecAttr is the file the change_onexec command is written
	// to. Kernels since 5.1 have a directory of attributes per module,
	// which keeps the write from reaching whichever other module owns the
	// shared files; older ones only have the shared file. Empty means the
	// shared file.
	AppArmorExecAttr string
}

const (
	lsmSELinux  = "SELinux"
	lsmAppArmor = "AppArmor"

	// sharedExecAttr is the exec attribute of the task's first major
	// module; SELinux has no directory of its own, so it always uses this.
	sharedExecAttr   = "/proc/thread-self/attr/exec"
	appArmorExecAttr = "/proc/thread-self/attr/apparmor/exec"

	selinuxfsPath        = "/sys/fs/selinux"
	appArmorEnabledParam = "/sys/module/apparmor/parameters/enabled"
	appArmorSecurityfs   = "/sys/kernel/security/apparmor"

	// maxAttrLen keeps a label within one page, the most the kernel
	// takes in a write to a /proc attribute (it truncates the rest) or in
	// mount data. 4096 is the smallest page size Linux uses.
	maxAttrLen = 4096 - 1

	// containerFileType is the type container-selinux gives a container's
	// own files.
	containerFileType = "container_file_t"
)

// DetectHostLSM reports which security modules the running kernel has
// enabled. It costs a few stat and read calls, so it can be called for
// every sandbox; nothing is cached here (go-selinux keeps its own answer
// for the life of the process, which cannot change without a reboot).
func DetectHostLSM() HostLSM {
	var h HostLSM
	h.SELinux = selinux.GetEnabled()
	if !h.SELinux {
		h.SELinuxWhy = selinuxAbsence()
	}
	h.AppArmor, h.AppArmorWhy = detectAppArmor()
	if h.AppArmor {
		h.AppArmorExecAttr = sharedExecAttr
		if _, err := os.Stat(appArmorExecAttr); err == nil {
			h.AppArmorExecAttr = appArmorExecAttr
		}
	}
	return h
}

// selinuxAbsence explains why go-selinux found SELinux off, following the
// same checks it makes.
func selinuxAbsence() string {
	var st unix.Statfs_t
	if err := unix.Statfs(selinuxfsPath, &st); err != nil || uint32(st.Type) != unix.SELINUX_MAGIC {
		return "no selinuxfs mounted at " + selinuxfsPath
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		// Container runtimes mount it read-only to say SELinux is off.
		return "selinuxfs at " + selinuxfsPath + " is read-only"
	}
	return "no SELinux policy is loaded"
}

func detectAppArmor() (bool, string) {
	b, err := os.ReadFile(appArmorEnabledParam)
	if errors.Is(err, os.ErrNotExist) {
		return false, "no " + appArmorEnabledParam + ": the kernel has no AppArmor"
	}
	if err != nil {
		return false, err.Error()
	}
	if v := strings.TrimSpace(string(b)); v != "Y" {
		return false, fmt.Sprintf("%s is %q", appArmorEnabledParam, v)
	}
	// libapparmor and runc also want the policy interface, without which
	// no profile can have been loaded.
	if _, err := os.Stat(appArmorSecurityfs); err != nil {
		return false, "no " + appArmorSecurityfs + " (is securityfs mounted?)"
	}
	return true, ""
}

// PlanLSM works out what the sandbox's init must do to apply o on host.
// Malformed labels are reported first, on any host. A label the host
// cannot apply is an *LSMUnavailableError (both, joined, if neither
// module is there), or a warning in the plan with o.BestEffort.
func PlanLSM(o LSMOptions, host HostLSM) (*LSMPlan, error) {
	procLabel, mountLabel, err := selinuxLabels(o)
	if err != nil {
		return nil, err
	}
	profile := o.AppArmorProfile
	if profile != "" {
		if reason := checkAppArmorProfile(profile); reason != "" {
			return nil, &InvalidLabelError{LSM: lsmAppArmor, What: "profile", Label: profile, Reason: reason}
		}
	}
	if profile == "unconfined" {
		// Not a change, so nothing to ask of the host either.
		profile = ""
	}

	p := &LSMPlan{}
	var errs []error
	unavailable := func(e *LSMUnavailableError) {
		if o.BestEffort {
			p.Warnings = append(p.Warnings, e.Error()+"; going on without it")
		} else {
			errs = append(errs, e)
		}
	}

	if procLabel != "" || mountLabel != "" {
		if host.SELinux {
			if procLabel != "" {
				p.ExecWrites = append(p.ExecWrites, AttrWrite{Path: sharedExecAttr, Data: procLabel})
			}
			if mountLabel != "" {
				p.MountOption = label.FormatMountLabel("", mountLabel)
			}
		} else {
			unavailable(&LSMUnavailableError{LSM: lsmSELinux, Reason: host.SELinuxWhy})
		}
	}

	if profile != "" {
		if host.AppArmor {
			path := host.AppArmorExecAttr
			if path == "" {
				path = sharedExecAttr
			}
			for _, w := range p.ExecWrites {
				if w.Path == path {
					// The second write would go to SELinux, which would
					// refuse it only when the workload starts.
					return nil, fmt.Errorf("both SELinux and AppArmor would be set through %s; the kernel has no separate AppArmor attribute", path)
				}
			}
			// "exec NAME" is AppArmor's change_onexec command.
			p.ExecWrites = append(p.ExecWrites, AttrWrite{Path: path, Data: "exec " + profile})
		} else {
			unavailable(&LSMUnavailableError{LSM: lsmAppArmor, Reason: host.AppArmorWhy})
		}
	}

	switch len(errs) {
	case 0:
		return p, nil
	case 1:
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

// selinuxLabels checks o's SELinux labels and returns the process label
// and the mount label, the latter derived if not given.
func selinuxLabels(o LSMOptions) (procLabel, mountLabel string, err error) {
	procLabel, mountLabel = o.SELinuxLabel, o.SELinuxMountLabel
	if procLabel != "" {
		if reason := checkSELinuxLabel(procLabel); reason != "" {
			return "", "", &InvalidLabelError{LSM: lsmSELinux, What: "label", Label: procLabel, Reason: reason}
		}
	}
	if mountLabel != "" {
		if reason := checkSELinuxLabel(mountLabel); reason != "" {
			return "", "", &InvalidLabelError{LSM: lsmSELinux, What: "mount label", Label: mountLabel, Reason: reason}
		}
		return procLabel, mountLabel, nil
	}
	if procLabel != "" {
		c, _ := selinux.NewContext(procLabel) // checked above
		c["user"], c["role"], c["type"] = "system_u", "object_r", containerFileType
		mountLabel = c.Get()
	}
	return procLabel, mountLabel, nil
}

// checkSELinuxLabel returns why s is not a raw SELinux context,
// user:role:type[:level], or "" if it is one. Whether the policy knows the
// names is for the kernel to say; this catches typos early, on any host,
// and keeps out anything that would break the quoting of the mount option
// (the kernel drops every '"' in it) or the write.
func checkSELinuxLabel(s string) string {
	if len(s) > maxAttrLen {
		return fmt.Sprintf("longer than %d bytes", maxAttrLen)
	}
	c, err := selinux.NewContext(s)
	if err != nil {
		return "want user:role:type[:level]"
	}
	for _, part := range []string{"user", "role", "type"} {
		v := c[part]
		if v == "" {
			return part + " is empty"
		}
		if !isPolicyName(v) {
			return fmt.Sprintf("%s %q has characters other than letters, digits, '_', '.' and '-'", part, v)
		}
	}
	lvl := c["level"]
	if lvl == "" {
		if strings.Count(s, ":") > 2 {
			return "level is empty"
		}
		return ""
	}
	if !isMLSRange(lvl) {
		return fmt.Sprintf("level %q is not sensitivity[:categories][-sensitivity[:categories]]", lvl)
	}
	return ""
}

// isPolicyName reports whether s is made of the characters policy
// identifiers (users, roles, types) may have.
func isPolicyName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isWordByte(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// isMLSRange reports whether s is an MLS range as the kernel parses it:
// a low level, optionally '-' and a high level, where a level is a
// sensitivity, optionally ':' and a comma-separated list of categories
// or category ranges (c0.c1023).
func isMLSRange(s string) bool {
	low, high, isRange := strings.Cut(s, "-")
	return isMLSLevel(low) && (!isRange || isMLSLevel(high))
}

func isMLSLevel(s string) bool {
	sens, cats, hasCats := strings.Cut(s, ":")
	if !isWord(sens) {
		return false
	}
	if !hasCats {
		return true
	}
	for _, cat := range strings.Split(cats, ",") {
		first, last, isRange := strings.Cut(cat, ".")
		if !isWord(first) || isRange && !isWord(last) {
			return false
		}
	}
	return true
}

func isWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isWordByte(s[i]) {
			return false
		}
	}
	return true
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// checkAppArmorProfile returns why name cannot be sent in a change_onexec
// command, or "" if it can. The kernel trims whitespace off the command and
// stops at a NUL, so such bytes would change which profile is meant.
func checkAppArmorProfile(name string) string {
	if len("exec ")+len(name) > maxAttrLen {
		return fmt.Sprintf("longer than %d bytes", maxAttrLen-len("exec "))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c == 0x7f {
			return fmt.Sprintf("has whitespace or a control character at byte %d", i)
		}
	}
	return ""
}
