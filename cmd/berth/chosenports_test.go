package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A foreground run says on stderr which host port it chose for -p
// 127.0.0.1::80, and that port is the sandbox's; a port the caller chose
// is not repeated.
func TestRunReportsChosenPort(t *testing.T) {
	e := newCLIEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fixed := l.Addr().(*net.TCPAddr).Port
	l.Close()
	stderrR, stderrW := io.Pipe()
	var stdout strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- execute(context.Background(), append([]string{"--root", e.root}, e.args("run", "--net", "bridge",
			"-p", "127.0.0.1::80", "-p", "127.0.0.1:"+strconv.Itoa(fixed)+":81", "alpine:test",
			// Bounded, so that a run that never says its port ends.
			"sh", "-c", "echo served | timeout 60 nc -l -p 80")...), strings.NewReader(""), &stdout, stderrW)
		stderrW.Close()
	}()
	lines := bufio.NewScanner(stderrR)
	if !lines.Scan() {
		t.Fatalf("nothing on stderr; exit %d", <-done)
	}
	first := lines.Text()
	rest := make(chan string, 1)
	go func() {
		var b strings.Builder
		for lines.Scan() {
			b.WriteString(lines.Text() + "\n")
		}
		rest <- b.String()
	}()
	m := regexp.MustCompile(`^berth: published 80/tcp on 127\.0\.0\.1:(\d+)$`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("stderr began with %q; want the chosen port of 80/tcp", first)
	}
	var got string
	for deadline := time.Now().Add(time.Minute); got == "" && time.Now().Before(deadline); {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+m[1], time.Second)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(conn)
		conn.Close()
		got = string(b)
	}
	if got != "served\n" {
		t.Errorf("port %s gave %q; want the sandbox's served", m[1], got)
	}
	if code, more := <-done, <-rest; code != 0 || more != "" || stdout.String() != "" {
		t.Errorf("run: exit %d, stdout %q, more stderr %q; want 0 and nothing else", code, stdout.String(), more)
	}
}
