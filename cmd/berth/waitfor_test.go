package main

import (
	"strings"
	"testing"
)

// run -d --wait-for returns once the server answers: the first request
// after it, made at once, succeeds. A check that never passes leaves the
// container running, says which check and why, and exits 125; a check
// that cannot be parsed starts nothing.
func TestRunDetachedWaitFor(t *testing.T) {
	e := newDetachEnv(t)
	script := "echo warming up; sleep 1; mkdir -p /www && echo ready-page > /www/index.html; echo serving; exec httpd -f -p 8080 -h /www"
	id := strings.TrimSpace(e.must("run", "-d", "--wait-for", "http:8080/index.html", "--wait-for", "log:^serving$", "busybox:demo", "sh", "-c", script))
	if got := e.must("exec", id, "wget", "-qO-", "http://127.0.0.1:8080/index.html"); got != "ready-page\n" {
		t.Errorf("first request after run -d --wait-for: %q", got)
	}

	out, stderr, code := e.berth("run", "-d", "--wait-for", "tcp:81", "--wait-timeout", "1s", "busybox:demo", "sleep", "1000")
	if code != exitSetup || !strings.Contains(stderr, "TCP check of port 81") || !strings.Contains(stderr, "gave up after 1s") {
		t.Errorf("a port that never opens: exit %d, %q", code, stderr)
	}
	if id := strings.TrimSpace(out); e.container(id).Status != statusRunning {
		t.Errorf("the container that was not ready: %+v, want it left running", e.container(id))
	}

	for _, bad := range []string{"tcp:0", "http:x/", "log:(", "healthy:1", "ready"} {
		out, stderr, code := e.berth("run", "-d", "--wait-for", bad, "busybox:demo", "true")
		if code != exitSetup || out != "" || !strings.Contains(stderr, "--wait-for") {
			t.Errorf("--wait-for %s: exit %d, %q, %q", bad, code, out, stderr)
		}
	}
	if cs, err := listContainers(e.state); err != nil || len(cs) != 2 {
		t.Errorf("containers: %d, %v; want the 2 started", len(cs), err)
	}
}
