package plugin

import (
	"context"
	"syscall"
	"testing"
)

// The runtime core's own costs, on the test plugin: a start (exec to the
// first Info), a call round trip, and the next call after a kill -9.
// go test -run '^$' -bench 'BenchmarkCore' ./plugin/

func BenchmarkCoreStart(b *testing.B) {
	for _, mtls := range []bool{false, true} {
		name := "plain"
		if mtls {
			name = "AutoMTLS"
		}
		b.Run(name, func(b *testing.B) {
			opts := &Options{RunDir: b.TempDir(), AutoMTLS: mtls, Env: []string{envTestPlugin + "=storage"}}
			for b.Loop() {
				c, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
				if err != nil {
					b.Fatal(err)
				}
				c.close()
			}
		})
	}
}

func BenchmarkCoreCall(b *testing.B) {
	opts := &Options{RunDir: b.TempDir(), Env: []string{envTestPlugin + "=storage"}}
	c, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer c.close()
	for b.Loop() {
		if _, err := prepare(context.Background(), c, "ok"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCoreRestartAfterKill(b *testing.B) {
	opts := &Options{RunDir: b.TempDir(), Env: []string{envTestPlugin + "=storage"}}
	c, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer c.close()
	for b.Loop() {
		b.StopTimer()
		p := c.cur.Load()
		syscall.Kill(p.run.pid, syscall.SIGKILL)
		<-p.run.exited
		b.StartTimer()
		if _, err := prepare(context.Background(), c, "ok"); err != nil {
			b.Fatal(err)
		}
	}
}
