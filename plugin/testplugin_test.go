package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// The core tests' plugin is the test binary itself, run again with
// envTestPlugin set: TestMain then serves as a plugin instead of running
// tests. It serves the real InfoService and a StorageService whose
// Prepare does what its key says, so that one process can block, crash,
// log or fail with a sentinel on demand:
//
//	block-<name>     waits for its context to end, then writes <marker dir>/<name>
//	                 with the context's error (proof the cancel crossed the wire)
//	crash            the plugin kills itself with SIGKILL mid-call
//	notfound, exists, unsupported, invalid  fail with that sentinel
//	plain            fails with an error no sentinel matches
//	log              logs at each level, with attributes, and succeeds
//	stderr-junk      writes non-JSON and hostile lines to stderr, succeeds
//	pid              succeeds with the plugin's pid as its driver
//	helper           starts a helper, in a session of its own, that holds
//	                 the plugin's stderr; succeeds with its pid as its driver
//	anything else    succeeds
//
// The environment chooses how it starts:
//
//	BERTH_TESTPLUGIN=storage|network  serve this kind
//	BERTH_TESTPLUGIN=sdk              serve through ServeStorage
//	BERTH_TESTPLUGIN=hang             never perform the handshake
//	BERTH_TESTPLUGIN_VERSION=n        speak protocol n
//	BERTH_TESTPLUGIN_MARKERS=dir      where block-* writes
//	BERTH_TESTPLUGIN_ROOTS=file       announce the roots file names
//	BERTH_TESTPLUGIN_MUTE_INFO=1      never answer Info
//	BERTH_TESTPLUGIN_DEAF=1           never answer go-plugin's Shutdown
const (
	envTestPlugin   = "BERTH_TESTPLUGIN"
	envTestVersion  = "BERTH_TESTPLUGIN_VERSION"
	envTestMarkers  = "BERTH_TESTPLUGIN_MARKERS"
	envTestRoots    = "BERTH_TESTPLUGIN_ROOTS" // a file naming the roots to announce
	envTestMuteInfo = "BERTH_TESTPLUGIN_MUTE_INFO"
	envTestDeaf     = "BERTH_TESTPLUGIN_DEAF"
)

// serveDeaf is serve with go-plugin's GRPCController/Shutdown, which the
// host calls as it stops the plugin, answered never.
func serveDeaf(register func(*grpc.Server)) {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         goplugin.PluginSet{pluginName: &grpcPlugin{register: register}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if info.FullMethod == "/plugin.GRPCController/Shutdown" {
					select {}
				}
				return h(ctx, req)
			}))...)
		},
	})
}

// muteInfo never answers Info.
type muteInfo struct {
	pb.UnimplementedInfoServiceServer
}

func (muteInfo) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.InfoResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// testPluginMain runs the test plugin; it does not return.
func testPluginMain(mode string) {
	if v := os.Getenv(envTestVersion); v != "" {
		var n uint
		fmt.Sscan(v, &n)
		handshake.ProtocolVersion = n
	}
	log := Logger()
	switch mode {
	case "hang":
		time.Sleep(time.Hour)
	case "sdk":
		ServeStorage(&sdkStorage{})
	default:
		kind := mode
		roots := []string{"/nonexistent"}
		if f := os.Getenv(envTestRoots); f != "" {
			b, _ := os.ReadFile(f)
			roots = strings.Fields(string(b))
		}
		serveWith := func(register func(*grpc.Server)) { serve(kind, register) }
		if os.Getenv(envTestDeaf) != "" {
			serveWith = serveDeaf
		}
		serveWith(func(s *grpc.Server) {
			info := &infoServer{kind: kind, name: "testplugin", version: "v0.0.1", caps: []string{"quota", "diff", "Bad\x1b[0m"}, roots: roots}
			if os.Getenv(envTestMuteInfo) != "" {
				pb.RegisterInfoServiceServer(s, muteInfo{})
			} else {
				pb.RegisterInfoServiceServer(s, info)
			}
			pb.RegisterStorageServiceServer(s, &testStorage{log: log, markers: os.Getenv(envTestMarkers)})
		})
	}
	os.Exit(0)
}

type testStorage struct {
	pb.UnimplementedStorageServiceServer
	log     *slog.Logger
	markers string
}

func (t *testStorage) Prepare(ctx context.Context, req *pb.PrepareRequest) (*pb.PrepareResponse, error) {
	resp, err := t.prepare(ctx, req.GetKey())
	return resp, toStatus(err)
}

func (t *testStorage) prepare(ctx context.Context, key string) (*pb.PrepareResponse, error) {
	if name, ok := strings.CutPrefix(key, "block-"); ok {
		t.log.Info("blocking", "key", key)
		<-ctx.Done()
		if t.markers != "" {
			os.WriteFile(filepath.Join(t.markers, name), []byte(ctx.Err().Error()), 0o644)
		}
		t.log.Info("unblocked", "key", key, "err", ctx.Err().Error())
		return nil, ctx.Err()
	}
	switch key {
	case "crash":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Hour)
	case "notfound":
		return nil, fmt.Errorf("rootfs %q: %w", key, ErrNotFound)
	case "exists":
		return nil, fmt.Errorf("rootfs %q: %w", key, ErrExists)
	case "unsupported":
		return nil, fmt.Errorf("no diff here: %w", ErrUnsupported)
	case "invalid":
		return nil, fmt.Errorf("key %q: %w", key, ErrInvalid)
	case "plain":
		return nil, errors.New("disk on fire")
	case "log":
		t.log.Debug("a debug line", "n", 1)
		t.log.Info("an info line", "answer", 42, "who", "testplugin")
		t.log.Warn("a warning", "plugin", "spoofed")
		t.log.Error("an error line", "err", "boom")
	case "stderr-junk":
		fmt.Fprintln(processStderr, "not json at all")
		fmt.Fprintln(processStderr, `{"@message": 1, "@level": "error"}`)
		fmt.Fprintln(processStderr, `{"@message": "esc \u001b[31mred", "@level": "warn", "@timestamp": 7}`)
		fmt.Fprintln(processStderr, strings.Repeat("x", 3*maxLogLine))
		// Longer than go-plugin's 64 KiB line buffer, which it logs
		// itself, raw, whatever its logger's level.
		fmt.Fprintln(processStderr, "\x1b[31m"+strings.Repeat("y", 200<<10))
		for i := range 5000 {
			fmt.Fprintf(processStderr, "[INFO] flood %d\n", i)
		}
		fmt.Fprintln(processStderr, `{"@message": "after the flood", "@level": "error"}`)
	case "pid":
		return &pb.PrepareResponse{Driver: fmt.Sprint(os.Getpid())}, nil
	case "helper":
		// A helper in a session of its own, beyond the kill of the
		// plugin's process group, that holds the plugin's stderr.
		cmd := exec.Command("sleep", "600")
		cmd.Stderr = processStderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return &pb.PrepareResponse{Driver: fmt.Sprint(cmd.Process.Pid)}, nil
	}
	return &pb.PrepareResponse{Driver: "test"}, nil
}

// sdkStorage is served through the exported ServeStorage.
type sdkStorage struct{}

func (*sdkStorage) Roots() []string { return []string{"/nonexistent"} }
func (*sdkStorage) Prepare(context.Context, *PrepareRequest) (*PrepareResult, error) {
	return &PrepareResult{Driver: "sdk"}, nil
}
func (*sdkStorage) Release(context.Context, string) error  { return nil }
func (*sdkStorage) List(context.Context) ([]string, error) { return nil, nil }
func (*sdkStorage) Version() string                        { return "v9.9.9-sdk" }
