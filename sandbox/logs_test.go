package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var logT0 = time.Date(2026, 12, 6, 13, 45, 0, 0, time.UTC)

// logLine is an entry as the supervisor writes it, at logT0 plus i
// seconds.
func logLine(i int, stream, tag, text string) string {
	return fmt.Sprintf("%s %s %s %s\n", logT0.Add(time.Duration(i)*time.Second).Format("2006-01-02T15:04:05.000000000Z07:00"), stream, tag, text)
}

func readAll(t *testing.T, path string, opts *LogOptions) []string {
	t.Helper()
	var out []string
	err := ReadLog(context.Background(), path, opts, func(e LogEntry) error {
		tag := "F"
		if e.Partial {
			tag = "P"
		}
		out = append(out, fmt.Sprintf("%d %s %s %s", e.Time.Sub(logT0)/time.Second, e.Stream, tag, e.Text))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Damaged and crafted lines are skipped; a workload's text that looks
// like an entry is the text of the entry it is in.
func TestReadLogDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	log := logLine(0, "stdout", "F", "first") +
		"garbage\n" +
		"2026-13-06T13:45:00.000000000Z stdout F bad month\n" +
		logLine(1, "stdin", "F", "no such stream") +
		logLine(1, "stdout", "X", "no such tag") +
		strings.TrimSuffix(logLine(1, "stdout", "F", ""), " \n") + "\n" + // no space before the text
		logLine(1, "stdout", "F", strings.Repeat("x", LogEntryMax+1)) + // longer than an entry
		strings.Repeat("y", 3*maxLogLine) + "\n" + // longer than any line
		logLine(2, "stderr", "P", "half") +
		logLine(3, "stdout", "F", logLine(9, "stderr", "F", "forged")[:40]+" stderr F forged") +
		logLine(4, "stdout", "F", "") +
		logLine(5, "stdout", "F", strings.Repeat("z", LogEntryMax)) +
		strings.TrimSuffix(logLine(6, "stdout", "F", "unfinished"), "\n")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, path, nil)
	want := []string{
		"0 stdout F first",
		"2 stderr P half",
		"3 stdout F " + logLine(9, "stderr", "F", "forged")[:40] + " stderr F forged",
		"4 stdout F ",
		"5 stdout F " + strings.Repeat("z", LogEntryMax),
	}
	if !slices.Equal(got, want) {
		t.Errorf("entries:\n%q\nwant\n%q", got, want)
	}
}

// Tail, Since and Until select across the rotated file and the current
// one, oldest first.
func TestReadLogSelect(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	var older, newer string
	for i := 0; i < 5; i++ {
		older += logLine(i, "stdout", "F", fmt.Sprint("line ", i))
	}
	for i := 5; i < 10; i++ {
		newer += logLine(i, "stderr", "F", fmt.Sprint("line ", i))
	}
	if err := os.WriteFile(path+".1", []byte(older), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(newer), 0o600); err != nil {
		t.Fatal(err)
	}
	texts := func(opts *LogOptions) string {
		var out []string
		for _, e := range readAll(t, path, opts) {
			out = append(out, strings.Fields(e)[0])
		}
		return strings.Join(out, " ")
	}
	at := func(i int) time.Time { return logT0.Add(time.Duration(i) * time.Second) }
	for _, c := range []struct {
		opts *LogOptions
		want string
	}{
		{nil, "0 1 2 3 4 5 6 7 8 9"},
		{&LogOptions{Tail: 3}, "7 8 9"},
		{&LogOptions{Tail: 7}, "3 4 5 6 7 8 9"},
		{&LogOptions{Tail: 100}, "0 1 2 3 4 5 6 7 8 9"},
		{&LogOptions{Tail: -1}, ""},
		{&LogOptions{Since: at(4)}, "4 5 6 7 8 9"},
		{&LogOptions{Until: at(2)}, "0 1"},
		{&LogOptions{Since: at(3), Until: at(7)}, "3 4 5 6"},
		{&LogOptions{Tail: 2, Until: at(7)}, "5 6"},
		{&LogOptions{Tail: 2, Since: at(8)}, "8 9"},
	} {
		if got := texts(c.opts); got != c.want {
			t.Errorf("%+v: %q, want %q", c.opts, got, c.want)
		}
	}
	// A log not written yet has no entries.
	if got := readAll(t, filepath.Join(dir, "none"), nil); len(got) != 0 {
		t.Errorf("a missing log: %q", got)
	}
	// fn's error ends the reading.
	stop := errors.New("stop")
	n := 0
	err := ReadLog(context.Background(), path, nil, func(LogEntry) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn's error: %v after %d entries", err, n)
	}
	if err := ReadLog(context.Background(), path, &LogOptions{Tail: -2}, func(LogEntry) error { return nil }); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Tail -2: %v", err)
	}
}

// Following goes on across the log's rotation, and ends once the exit
// file exists and the log has been read to its end; or with ctx.
func TestReadLogFollow(t *testing.T) {
	dir := t.TempDir()
	path, exit := filepath.Join(dir, "log"), filepath.Join(dir, "exit.json")
	appendLog := func(lines ...string) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		for _, l := range lines {
			f.WriteString(l)
		}
	}
	appendLog(logLine(0, "stdout", "F", "before"), logLine(1, "stdout", "F", "tail"))

	// A follower that misses what it waits for fails the test, rather
	// than hanging it, when ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seen := make(chan string, 100)
	done := make(chan error, 1)
	var got []string
	go func() {
		defer close(seen)
		done <- ReadLog(ctx, path, &LogOptions{Tail: 1, Follow: true, Exit: exit}, func(e LogEntry) error {
			got = append(got, string(e.Text))
			seen <- string(e.Text)
			return nil
		})
	}()
	waitSeen := func(text string) {
		t.Helper()
		for s := range seen {
			if s == text {
				return
			}
		}
		t.Fatalf("following ended before %q: %v", text, <-done)
	}
	waitSeen("tail")
	// Written in two steps: a follower must not take half a line.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	half := logLine(2, "stderr", "F", "grown")
	f.WriteString(half[:20])
	f.Sync()
	time.Sleep(2 * followPoll) // lets the follower look at half a line
	f.WriteString(half[20:])
	f.Close()
	waitSeen("grown")
	appendLog(logLine(3, "stdout", "F", "rotated away"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLog(logLine(4, "stdout", "F", "new file"))
	waitSeen("new file")
	appendLog(logLine(5, "stdout", "F", "last"))
	if err := os.WriteFile(exit, []byte(`{"exitCode":0}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := []string{"tail", "grown", "rotated away", "new file", "last"}; !slices.Equal(got, want) {
		t.Errorf("followed %q, want %q", got, want)
	}

	// Without Exit, following ends with ctx.
	ctx, cancel = context.WithCancel(context.Background())
	err = ReadLog(ctx, path, &LogOptions{Follow: true}, func(e LogEntry) error {
		if string(e.Text) == "last" {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("following after ctx's end: %v", err)
	}
}
