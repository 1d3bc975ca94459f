package security

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	testProcLabel  = "system_u:system_r:container_t:s0:c100,c200"
	testMountLabel = "system_u:object_r:container_file_t:s0:c100,c200"
)

var (
	noLSM        = HostLSM{SELinuxWhy: "no selinuxfs mounted at /sys/fs/selinux", AppArmorWhy: "no /sys/module/apparmor/parameters/enabled: the kernel has no AppArmor"}
	selinuxHost  = HostLSM{SELinux: true, AppArmorWhy: "AppArmor off"}
	apparmorHost = HostLSM{AppArmor: true, AppArmorExecAttr: appArmorExecAttr, SELinuxWhy: "SELinux off"}
	bothHosts    = HostLSM{SELinux: true, AppArmor: true, AppArmorExecAttr: appArmorExecAttr}
)

func TestPlanLSM(t *testing.T) {
	tests := []struct {
		name string
		opts LSMOptions
		host HostLSM
		want LSMPlan
	}{
		{
			name: "nothing asked, nothing there",
			host: noLSM,
		},
		{
			name: "SELinux label, mount label derived",
			opts: LSMOptions{SELinuxLabel: testProcLabel},
			host: selinuxHost,
			want: LSMPlan{
				ExecWrites:  []AttrWrite{{"/proc/thread-self/attr/exec", testProcLabel}},
				MountOption: `context="` + testMountLabel + `"`,
			},
		},
		{
			name: "SELinux label and mount label given",
			opts: LSMOptions{SELinuxLabel: testProcLabel, SELinuxMountLabel: "system_u:object_r:svirt_sandbox_file_t:s0:c1,c2"},
			host: selinuxHost,
			want: LSMPlan{
				ExecWrites:  []AttrWrite{{"/proc/thread-self/attr/exec", testProcLabel}},
				MountOption: `context="system_u:object_r:svirt_sandbox_file_t:s0:c1,c2"`,
			},
		},
		{
			name: "SELinux mount label alone",
			opts: LSMOptions{SELinuxMountLabel: testMountLabel},
			host: selinuxHost,
			want: LSMPlan{MountOption: `context="` + testMountLabel + `"`},
		},
		{
			name: "SELinux label without a level",
			opts: LSMOptions{SELinuxLabel: "user_u:user_r:user_t"},
			host: selinuxHost,
			want: LSMPlan{
				ExecWrites:  []AttrWrite{{"/proc/thread-self/attr/exec", "user_u:user_r:user_t"}},
				MountOption: `context="system_u:object_r:container_file_t"`,
			},
		},
		{
			name: "SELinux label with a range keeps the range",
			opts: LSMOptions{SELinuxLabel: "system_u:system_r:spc_t:s0-s0:c0.c1023"},
			host: selinuxHost,
			want: LSMPlan{
				ExecWrites:  []AttrWrite{{"/proc/thread-self/attr/exec", "system_u:system_r:spc_t:s0-s0:c0.c1023"}},
				MountOption: `context="system_u:object_r:container_file_t:s0-s0:c0.c1023"`,
			},
		},
		{
			name: "SELinux missing, best effort",
			opts: LSMOptions{SELinuxLabel: testProcLabel, BestEffort: true},
			host: noLSM,
			want: LSMPlan{Warnings: []string{
				"SELinux label requested but SELinux is not enabled on this host (no selinuxfs mounted at /sys/fs/selinux); going on without it",
			}},
		},
		{
			name: "AppArmor profile through its own attribute",
			opts: LSMOptions{AppArmorProfile: "berth-default"},
			host: apparmorHost,
			want: LSMPlan{ExecWrites: []AttrWrite{{"/proc/thread-self/attr/apparmor/exec", "exec berth-default"}}},
		},
		{
			name: "AppArmor profile through the shared attribute",
			opts: LSMOptions{AppArmorProfile: "berth-default"},
			host: HostLSM{AppArmor: true, AppArmorExecAttr: "/proc/thread-self/attr/exec"},
			want: LSMPlan{ExecWrites: []AttrWrite{{"/proc/thread-self/attr/exec", "exec berth-default"}}},
		},
		{
			name: "AppArmor attribute unknown means the shared one",
			opts: LSMOptions{AppArmorProfile: "berth-default"},
			host: HostLSM{AppArmor: true},
			want: LSMPlan{ExecWrites: []AttrWrite{{"/proc/thread-self/attr/exec", "exec berth-default"}}},
		},
		{
			name: "AppArmor namespaced and stacked profile names pass",
			opts: LSMOptions{AppArmorProfile: ":ns:/berth//&other"},
			host: apparmorHost,
			want: LSMPlan{ExecWrites: []AttrWrite{{"/proc/thread-self/attr/apparmor/exec", "exec :ns:/berth//&other"}}},
		},
		{
			name: "unconfined asks nothing of AppArmor",
			opts: LSMOptions{AppArmorProfile: "unconfined"},
			host: noLSM,
		},
		{
			name: "AppArmor missing, best effort",
			opts: LSMOptions{AppArmorProfile: "berth-default", BestEffort: true},
			host: noLSM,
			want: LSMPlan{Warnings: []string{
				"AppArmor profile requested but AppArmor is not enabled on this host (no /sys/module/apparmor/parameters/enabled: the kernel has no AppArmor); going on without it",
			}},
		},
		{
			name: "both asked, SELinux there, AppArmor skipped",
			opts: LSMOptions{SELinuxLabel: testProcLabel, AppArmorProfile: "berth-default", BestEffort: true},
			host: selinuxHost,
			want: LSMPlan{
				ExecWrites:  []AttrWrite{{"/proc/thread-self/attr/exec", testProcLabel}},
				MountOption: `context="` + testMountLabel + `"`,
				Warnings:    []string{"AppArmor profile requested but AppArmor is not enabled on this host (AppArmor off); going on without it"},
			},
		},
		{
			name: "both asked, both skipped",
			opts: LSMOptions{SELinuxLabel: testProcLabel, AppArmorProfile: "berth-default", BestEffort: true},
			host: HostLSM{},
			want: LSMPlan{Warnings: []string{
				"SELinux label requested but SELinux is not enabled on this host; going on without it",
				"AppArmor profile requested but AppArmor is not enabled on this host; going on without it",
			}},
		},
		{
			name: "both asked, both there",
			opts: LSMOptions{SELinuxLabel: testProcLabel, AppArmorProfile: "berth-default"},
			host: bothHosts,
			want: LSMPlan{
				ExecWrites: []AttrWrite{
					{"/proc/thread-self/attr/exec", testProcLabel},
					{"/proc/thread-self/attr/apparmor/exec", "exec berth-default"},
				},
				MountOption: `context="` + testMountLabel + `"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PlanLSM(tt.opts, tt.host)
			if err != nil {
				t.Fatalf("PlanLSM: %v", err)
			}
			if diff := cmp.Diff(&tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanLSMUnavailable(t *testing.T) {
	tests := []struct {
		name    string
		opts    LSMOptions
		host    HostLSM
		wantLSM []string // in the order reported
		wantMsg string
	}{
		{
			name:    "SELinux label",
			opts:    LSMOptions{SELinuxLabel: testProcLabel},
			host:    noLSM,
			wantLSM: []string{"SELinux"},
			wantMsg: "SELinux label requested but SELinux is not enabled on this host (no selinuxfs mounted at /sys/fs/selinux)",
		},
		{
			name:    "SELinux mount label alone",
			opts:    LSMOptions{SELinuxMountLabel: testMountLabel},
			host:    apparmorHost,
			wantLSM: []string{"SELinux"},
			wantMsg: "SELinux label requested but SELinux is not enabled on this host (SELinux off)",
		},
		{
			name:    "AppArmor profile",
			opts:    LSMOptions{AppArmorProfile: "berth-default"},
			host:    selinuxHost,
			wantLSM: []string{"AppArmor"},
			wantMsg: "AppArmor profile requested but AppArmor is not enabled on this host (AppArmor off)",
		},
		{
			name:    "both asked, only AppArmor missing",
			opts:    LSMOptions{SELinuxLabel: testProcLabel, AppArmorProfile: "berth-default"},
			host:    selinuxHost,
			wantLSM: []string{"AppArmor"},
			wantMsg: "AppArmor profile requested but AppArmor is not enabled on this host (AppArmor off)",
		},
		{
			name:    "both asked, only SELinux missing",
			opts:    LSMOptions{SELinuxLabel: testProcLabel, AppArmorProfile: "berth-default"},
			host:    apparmorHost,
			wantLSM: []string{"SELinux"},
			wantMsg: "SELinux label requested but SELinux is not enabled on this host (SELinux off)",
		},
		{
			name:    "both asked, neither there",
			opts:    LSMOptions{SELinuxLabel: testProcLabel, AppArmorProfile: "berth-default"},
			host:    HostLSM{},
			wantLSM: []string{"SELinux", "AppArmor"},
			wantMsg: "SELinux label requested but SELinux is not enabled on this host\n" +
				"AppArmor profile requested but AppArmor is not enabled on this host",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := PlanLSM(tt.opts, tt.host)
			if err == nil {
				t.Fatalf("PlanLSM = %+v, want an error", plan)
			}
			if plan != nil {
				t.Errorf("PlanLSM returned a plan with its error: %+v", plan)
			}
			if !errors.Is(err, ErrLSMUnavailable) {
				t.Errorf("errors.Is(%v, ErrLSMUnavailable) = false", err)
			}
			if errors.Is(err, ErrInvalidLSMLabel) {
				t.Errorf("errors.Is(%v, ErrInvalidLSMLabel) = true", err)
			}
			if got := err.Error(); got != tt.wantMsg {
				t.Errorf("message:\n got %q\nwant %q", got, tt.wantMsg)
			}
			var ue *LSMUnavailableError
			if !errors.As(err, &ue) {
				t.Fatalf("errors.As(%v, *LSMUnavailableError) = false", err)
			}
			if ue.LSM != tt.wantLSM[0] {
				t.Errorf("LSM = %q, want %q", ue.LSM, tt.wantLSM[0])
			}
			var got []string
			for _, e := range unwrapAll(err) {
				if ue, ok := e.(*LSMUnavailableError); ok {
					got = append(got, ue.LSM)
				}
			}
			if !cmp.Equal(got, tt.wantLSM) {
				t.Errorf("unavailable modules = %q, want %q", got, tt.wantLSM)
			}
		})
	}
}

// unwrapAll returns err and everything it wraps.
func unwrapAll(err error) []error {
	out := []error{err}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, unwrapAll(e)...)
		}
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			out = append(out, unwrapAll(e)...)
		}
	}
	return out
}

func TestPlanLSMInvalid(t *testing.T) {
	tests := []struct {
		name    string
		opts    LSMOptions
		wantLSM string
		wantMsg string
	}{
		{"one field", LSMOptions{SELinuxLabel: "container_t"}, "SELinux",
			`invalid SELinux label "container_t": want user:role:type[:level]`},
		{"two fields", LSMOptions{SELinuxLabel: "system_u:container_t"}, "SELinux",
			`invalid SELinux label "system_u:container_t": want user:role:type[:level]`},
		{"empty role", LSMOptions{SELinuxLabel: "system_u::container_t:s0"}, "SELinux",
			`invalid SELinux label "system_u::container_t:s0": role is empty`},
		{"empty level", LSMOptions{SELinuxLabel: "system_u:system_r:container_t:"}, "SELinux",
			`invalid SELinux label "system_u:system_r:container_t:": level is empty`},
		{"space in type", LSMOptions{SELinuxLabel: "system_u:system_r:container t:s0"}, "SELinux",
			`invalid SELinux label "system_u:system_r:container t:s0": type "container t" has characters other than letters, digits, '_', '.' and '-'`},
		{"quote would end the mount option", LSMOptions{SELinuxLabel: `system_u:system_r:container_t:s0",fscontext="x`}, "SELinux",
			`invalid SELinux label "system_u:system_r:container_t:s0\",fscontext=\"x": level "s0\",fscontext=\"x" is not sensitivity[:categories][-sensitivity[:categories]]`},
		{"doubled comma in categories", LSMOptions{SELinuxLabel: "system_u:system_r:container_t:s0:c1,,c2"}, "SELinux",
			`invalid SELinux label "system_u:system_r:container_t:s0:c1,,c2": level "s0:c1,,c2" is not sensitivity[:categories][-sensitivity[:categories]]`},
		{"newline", LSMOptions{SELinuxLabel: "system_u:system_r:container_t:s0\n"}, "SELinux",
			`invalid SELinux label "system_u:system_r:container_t:s0\n": level "s0\n" is not sensitivity[:categories][-sensitivity[:categories]]`},
		{"NUL", LSMOptions{SELinuxLabel: "system_u:system_r:container_t\x00:s0"}, "SELinux",
			`invalid SELinux label "system_u:system_r:container_t\x00:s0": type "container_t\x00" has characters other than letters, digits, '_', '.' and '-'`},
		{"half range", LSMOptions{SELinuxLabel: "system_u:system_r:container_t:s0-"}, "SELinux",
			`invalid SELinux label "system_u:system_r:container_t:s0-": level "s0-" is not sensitivity[:categories][-sensitivity[:categories]]`},
		{"too long", LSMOptions{SELinuxLabel: "u:r:" + strings.Repeat("t", 4096)}, "SELinux",
			`invalid SELinux label "u:r:` + strings.Repeat("t", 4096) + `": longer than 4095 bytes`},
		{"bad mount label", LSMOptions{SELinuxLabel: testProcLabel, SELinuxMountLabel: "container_file_t"}, "SELinux",
			`invalid SELinux mount label "container_file_t": want user:role:type[:level]`},
		{"profile with a space", LSMOptions{AppArmorProfile: "berth default"}, "AppArmor",
			`invalid AppArmor profile "berth default": has whitespace or a control character at byte 5`},
		{"profile with a newline", LSMOptions{AppArmorProfile: "berth\nexec unconfined"}, "AppArmor",
			`invalid AppArmor profile "berth\nexec unconfined": has whitespace or a control character at byte 5`},
		{"profile with a NUL", LSMOptions{AppArmorProfile: "berth\x00"}, "AppArmor",
			`invalid AppArmor profile "berth\x00": has whitespace or a control character at byte 5`},
		{"profile of only a tab", LSMOptions{AppArmorProfile: "\t"}, "AppArmor",
			`invalid AppArmor profile "\t": has whitespace or a control character at byte 0`},
		{"profile too long", LSMOptions{AppArmorProfile: strings.Repeat("p", 4091)}, "AppArmor",
			`invalid AppArmor profile "` + strings.Repeat("p", 4091) + `": longer than 4090 bytes`},
	}
	// A malformed label is reported as such whatever the host has and
	// whether or not skipping is allowed.
	hosts := map[string]HostLSM{"no LSM": noLSM, "SELinux": selinuxHost, "AppArmor": apparmorHost, "both": bothHosts}
	for _, tt := range tests {
		for hostName, host := range hosts {
			for _, bestEffort := range []bool{false, true} {
				o := tt.opts
				o.BestEffort = bestEffort
				plan, err := PlanLSM(o, host)
				if err == nil {
					t.Errorf("%s, host %s, best effort %v: PlanLSM = %+v, want an error", tt.name, hostName, bestEffort, plan)
					continue
				}
				if !errors.Is(err, ErrInvalidLSMLabel) || errors.Is(err, ErrLSMUnavailable) {
					t.Errorf("%s, host %s: error %v is not (only) ErrInvalidLSMLabel", tt.name, hostName, err)
				}
				var ie *InvalidLabelError
				if !errors.As(err, &ie) || ie.LSM != tt.wantLSM {
					t.Errorf("%s, host %s: errors.As gives %+v, want LSM %q", tt.name, hostName, ie, tt.wantLSM)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("%s, host %s: message:\n got %q\nwant %q", tt.name, hostName, err.Error(), tt.wantMsg)
				}
			}
		}
	}
}

func TestPlanLSMSharedAttrConflict(t *testing.T) {
	host := HostLSM{SELinux: true, AppArmor: true, AppArmorExecAttr: sharedExecAttr}
	_, err := PlanLSM(LSMOptions{SELinuxLabel: testProcLabel, AppArmorProfile: "berth-default"}, host)
	if err == nil || !strings.Contains(err.Error(), "/proc/thread-self/attr/exec") {
		t.Fatalf("PlanLSM = %v, want an error naming the shared attribute", err)
	}
}

func TestMountData(t *testing.T) {
	withLabel := &LSMPlan{MountOption: `context="` + testMountLabel + `"`}
	tests := []struct {
		plan *LSMPlan
		data string
		want string
	}{
		{nil, "", ""},
		{nil, "mode=755", "mode=755"},
		{&LSMPlan{}, "mode=755,size=65536k", "mode=755,size=65536k"},
		{withLabel, "", `context="system_u:object_r:container_file_t:s0:c100,c200"`},
		{withLabel, "mode=755,size=65536k", `mode=755,size=65536k,context="system_u:object_r:container_file_t:s0:c100,c200"`},
	}
	for _, tt := range tests {
		if got := tt.plan.MountData(tt.data); got != tt.want {
			t.Errorf("%+v.MountData(%q) = %q, want %q", tt.plan, tt.data, got, tt.want)
		}
	}
}

// TestMountOptionKernelParsing splits mount data the way SELinux does
// before the filesystem sees it (security/selinux/hooks.c: a comma inside
// double quotes does not end an option, and every quote is dropped from
// the value) and checks the label comes out whole and the other options
// untouched.
func TestMountOptionKernelParsing(t *testing.T) {
	for _, lbl := range []string{testMountLabel, "system_u:object_r:container_file_t:s0-s0:c0.c10,c12,c1023", "u:r:t"} {
		plan, err := PlanLSM(LSMOptions{SELinuxMountLabel: lbl}, selinuxHost)
		if err != nil {
			t.Fatal(err)
		}
		opts := kernelSplitOptions(plan.MountData("nosuid,mode=620,gid=5"))
		want := []string{"nosuid", "mode=620", "gid=5", "context=" + lbl}
		if diff := cmp.Diff(want, opts); diff != "" {
			t.Errorf("label %q: options as the kernel sees them (-want +got):\n%s", lbl, diff)
		}
	}
}

func kernelSplitOptions(data string) []string {
	var out []string
	for data != "" {
		quoted := false
		n := 0
		for ; n < len(data); n++ {
			if data[n] == '"' {
				quoted = !quoted
			}
			if data[n] == ',' && !quoted {
				break
			}
		}
		out = append(out, strings.ReplaceAll(data[:n], `"`, ""))
		if n == len(data) {
			break
		}
		data = data[n+1:]
	}
	return out
}

func TestLSMUnavailableErrorMessage(t *testing.T) {
	tests := []struct {
		err  *LSMUnavailableError
		want string
	}{
		{&LSMUnavailableError{LSM: "SELinux", Reason: "no selinuxfs mounted at /sys/fs/selinux"},
			"SELinux label requested but SELinux is not enabled on this host (no selinuxfs mounted at /sys/fs/selinux)"},
		{&LSMUnavailableError{LSM: "AppArmor"},
			"AppArmor profile requested but AppArmor is not enabled on this host"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if !errors.Is(tt.err, ErrLSMUnavailable) {
			t.Errorf("errors.Is(%v, ErrLSMUnavailable) = false", tt.err)
		}
	}
}

// TestDetectHostLSM compares DetectHostLSM with what the kernel shows
// through other doors than the ones it uses.
func TestDetectHostLSM(t *testing.T) {
	h := DetectHostLSM()
	t.Logf("DetectHostLSM() = %+v", h)

	// SELinux is on when selinuxfs is mounted writable and the kernel
	// gives tasks labels (before a policy loads, every task is "kernel").
	wantSELinux := false
	if rw, ok := selinuxfsMount(t); ok && rw {
		cur, err := os.ReadFile("/proc/self/attr/current")
		wantSELinux = err == nil && strings.TrimRight(string(cur), "\x00\n") != "kernel"
	}
	if h.SELinux != wantSELinux {
		t.Errorf("SELinux = %v, but the kernel shows %v", h.SELinux, wantSELinux)
	}
	if !h.SELinux && h.SELinuxWhy == "" {
		t.Error("SELinux off but SELinuxWhy is empty")
	}

	// AppArmor answers reads of its own current attribute only when it
	// is active (EINVAL otherwise, ENOENT when not built in); kernels
	// before 5.1 lack that file, and there the module parameter says.
	wantAppArmor := false
	_, attrErr := os.ReadFile("/proc/self/attr/apparmor/current")
	switch {
	case attrErr == nil:
		wantAppArmor = true
	case errors.Is(attrErr, os.ErrNotExist):
		b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
		wantAppArmor = err == nil && strings.TrimSpace(string(b)) == "Y"
	}
	if wantAppArmor {
		// Without its securityfs directory no profile can be loaded.
		if _, err := os.Stat("/sys/kernel/security/apparmor"); err != nil {
			wantAppArmor = false
		}
	}
	if h.AppArmor != wantAppArmor {
		t.Errorf("AppArmor = %v, but the kernel shows %v (reading its current attribute: %v)", h.AppArmor, wantAppArmor, attrErr)
	}
	switch {
	case !h.AppArmor && h.AppArmorWhy == "":
		t.Error("AppArmor off but AppArmorWhy is empty")
	case !h.AppArmor && h.AppArmorExecAttr != "":
		t.Errorf("AppArmor off but AppArmorExecAttr = %q", h.AppArmorExecAttr)
	case h.AppArmor:
		want := "/proc/thread-self/attr/exec"
		if attrErr == nil {
			want = "/proc/thread-self/attr/apparmor/exec"
		}
		if h.AppArmorExecAttr != want {
			t.Errorf("AppArmorExecAttr = %q, want %q", h.AppArmorExecAttr, want)
		}
	}
}

// selinuxfsMount reports whether /proc/self/mountinfo lists a selinuxfs
// mount, and whether one is writable.
func selinuxfsMount(t *testing.T) (rw, ok bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// ID parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, found := strings.Cut(s.Text(), " - ")
		if !found || strings.Fields(post)[0] != "selinuxfs" {
			continue
		}
		ok = true
		if fields := strings.Fields(pre); len(fields) > 5 && strings.HasPrefix(fields[5], "rw") {
			rw = true
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return rw, ok
}
