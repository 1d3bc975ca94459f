package build

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestApplyChanges(t *testing.T) {
	cfg := &v1.Config{
		Env:        []string{"PATH=/usr/bin:/bin", "HOME=/root"},
		Cmd:        []string{"/bin/sh"},
		WorkingDir: "/srv",
	}
	err := ApplyChanges(cfg, []string{
		`ENV APP=/opt/app GREETING="hello world"`,
		`WORKDIR data`,
		`ENTRYPOINT ["/entry"]`,
		`CMD run --now`,
		`EXPOSE 80 53/udp 8000-8010`,
		`LABEL org.example.home=$APP "with space"=yes`,
		`USER 1000:1000`,
		`STOPSIGNAL SIGTERM`,
		`VOLUME ["$APP/data"]`,
		`HEALTHCHECK --interval=5s CMD ["true"]`,
		`MAINTAINER someone@example.com`,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &v1.Config{
		Env:          []string{"PATH=/usr/bin:/bin", "HOME=/root", "APP=/opt/app", "GREETING=hello world"},
		WorkingDir:   "/srv/data",
		Entrypoint:   []string{"/entry"},
		Cmd:          []string{"/bin/sh", "-c", "run --now"},
		ExposedPorts: map[string]struct{}{"80/tcp": {}, "53/udp": {}, "8000-8010/tcp": {}},
		Labels:       map[string]string{"org.example.home": "/opt/app", "with space": "yes", "maintainer": "someone@example.com"},
		User:         "1000:1000",
		StopSignal:   "SIGTERM",
		Volumes:      map[string]struct{}{"/opt/app/data": {}},
		Healthcheck:  &v1.HealthConfig{Test: []string{"CMD", "true"}, Interval: 5e9},
	}
	if d := cmp.Diff(want, cfg); d != "" {
		t.Errorf("config (-want +got):\n%s", d)
	}
}

// An ENTRYPOINT clears the image's Cmd, as under Docker, unless a CMD
// came before it.
func TestApplyChangesEntrypointClearsCmd(t *testing.T) {
	cfg := &v1.Config{Cmd: []string{"old"}}
	if err := ApplyChanges(cfg, []string{`ENTRYPOINT ["/e"]`}); err != nil {
		t.Fatal(err)
	}
	if cfg.Cmd != nil {
		t.Errorf("Cmd = %q after ENTRYPOINT, want none", cfg.Cmd)
	}
	cfg = &v1.Config{Cmd: []string{"old"}}
	if err := ApplyChanges(cfg, []string{`CMD ["new"]`, `ENTRYPOINT ["/e"]`}); err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(cfg.Cmd, []string{"new"}) {
		t.Errorf("Cmd = %q after CMD then ENTRYPOINT, want [new]", cfg.Cmd)
	}
}

func TestApplyChangesRefused(t *testing.T) {
	for _, change := range []string{
		"RUN echo hi",
		"COPY a /b",
		"ADD a /b",
		"FROM alpine",
		"ONBUILD RUN true",
		"ARG X=1",
		"BOGUS x",
		"EXPOSE 80/icmp",
		"EXPOSE 99999",
		"CMD a\nRUN b",
	} {
		err := ApplyChanges(&v1.Config{}, []string{change})
		if err == nil {
			t.Errorf("ApplyChanges(%q) succeeded", change)
			continue
		}
		if !strings.Contains(err.Error(), strings.SplitN(change, "\n", 2)[0]) {
			t.Errorf("ApplyChanges(%q): error %q does not name the change", change, err)
		}
	}
	err := ApplyChanges(&v1.Config{}, []string{"RUN echo hi"})
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("RUN: error %v is not ErrUnsupported", err)
	}
}
