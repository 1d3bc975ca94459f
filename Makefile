# berth: build, demo, test and bench. Targets that install packages or run
# sandboxes need root, on Debian 12.
#
#   make build   build bin/berth
#   make plugins build the example plugins into bin/plugins (berth run --storage-plugin bin/plugins/...)
#   make demo    install what the demo needs, build, import busybox:demo, run a hardened sandbox
#   make test    install what the tests need, then vet, gofmt check, go test
#   make soak    the soak test (a few minutes; SOAK_RUNS=60 for a short try), not in make test
#   make bench   install the runtimes to compare with, then run benchmarks (quick; make bench-full)
#   make clean   remove bin/

# The Go toolchain: whatever hack/ensure-go.sh prints (fetching Go if need be).
# Worked out the first time a recipe uses it, then kept, so `make clean` never
# fetches anything. Override with `make GO=/path/to/go`.
GO = $(eval GO := $(call ensure-go))$(GO)
ensure-go = $(or $(shell hack/ensure-go.sh),$(error hack/ensure-go.sh found no usable Go toolchain))
GOFMT = $(dir $(GO))gofmt

DEMO_IMAGE := busybox:demo
DEMO_TAR := bin/busybox-demo.tar.gz

# Prerequisites run in the order written: packages before builds.
.NOTPARALLEL:
.DEFAULT_GOAL := build
.PHONY: build plugins cni demo test bench bench-full clean demo-deps test-deps bench-deps

build:
	$(GO) build -o bin/berth ./cmd/berth

# The example plugins (examples/plugins). berth runs a plugin only from a
# path root owns and nobody else can write, so install them with
# `install -m 0755 bin/plugins/* /usr/local/lib/berth/plugins/`, or use
# them from here if this clone is root's alone.
plugins:
	$(GO) build -o bin/plugins/ ./examples/plugins/...

# The CNI plugins bridge networking uses, built from the Go module proxy at
# the version go.mod pins, into berth's own directory.
cni:
	GO=$(GO) hack/build-cni.sh

demo: demo-deps build cni
	bin/berth image inspect $(DEMO_IMAGE) >/dev/null 2>&1 || { \
		hack/mkdemo.sh $(DEMO_TAR) && \
		bin/berth image import $(DEMO_TAR) --name $(DEMO_IMAGE); }
	bin/berth image ls
	bin/berth run --hostname demo --memory 64m --pids-limit 64 --read-only \
		-v $(CURDIR)/hack:/demo:ro $(DEMO_IMAGE) sh /demo/demo-inside.sh

# Tests run one package at a time: netplug's leak audit counts host-wide
# veths and rules, which other packages' sandboxes would disturb. Then
# again under the race detector, since berth is meant to be used by many
# goroutines at once (-short trims the leak audit's cycles).
test: test-deps cni
	$(GO) vet ./...
	@unformatted=$$($(GOFMT) -l .); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting (run gofmt -w):" >&2; \
		echo "$$unformatted" >&2; \
		exit 1; \
	fi
	$(GO) test -count=1 -p 1 -timeout 20m ./...
	$(GO) test -race -short -count=1 -p 1 -timeout 20m ./...
	GO=$(GO) hack/fuzz.sh

# The soak test, which make test leaves out: thousands of runs, execs and
# imports with berth commands and sandboxes killed at random moments and
# their records damaged, then berth gc, then an audit that nothing is left
# (soak/doc.go). `make soak SOAK_RUNS=60` is a short try.
SOAK_RUNS ?= 2000
SOAK_CONCURRENCY ?= 4
.PHONY: soak
soak: test-deps build cni
	BERTH_SOAK_RUNS=$(SOAK_RUNS) BERTH_SOAK_CONCURRENCY=$(SOAK_CONCURRENCY) BERTH_SOAK_BINARY=$(CURDIR)/bin/berth \
		$(GO) test -tags soak -count=1 -timeout 4h -v -run TestSoak ./soak/

# The comparative benchmark: berth (API and CLI), runc, crun, bubblewrap
# and podman on one Alpine rootfs, in one process; results, tables and plots
# go to bench/results. BENCH_MODE=full (or `make bench-full`) takes longer.
BENCH_MODE ?= quick
bench: bench-deps build cni
	@[ "$$(id -u)" -eq 0 ] || { echo "make bench must run as root" >&2; exit 1; }
	GO=$(GO) $(GO) run ./bench/cmd/berth-bench -$(BENCH_MODE) -out bench/results

bench-full:
	$(MAKE) bench BENCH_MODE=full

# What a plugin costs (berth-bench scenario 7 alone, about half a minute),
# written to BENCH_PLUGINS_OUT so that bench/results keeps the full run.
BENCH_PLUGINS_OUT ?= /tmp/berth-bench-plugins
.PHONY: bench-plugins
bench-plugins: build cni
	@[ "$$(id -u)" -eq 0 ] || { echo "make bench-plugins must run as root" >&2; exit 1; }
	GO=$(GO) $(GO) run ./bench/cmd/berth-bench -$(BENCH_MODE) -plugins only -out $(BENCH_PLUGINS_OUT)
	$(GO) test -run '^$$' -bench Plugin -timeout 10m ./plugin/

# Shipping and building (issue 13, about two minutes): pull and push
# throughput from the reference registry on 127.0.0.1, the build of a small
# Dockerfile and its cached rebuild, then Sandbox.Reset. go test prints
# throughput as MB/s; the output goes to BENCH_SHIP_OUT as well.
BENCH_SHIP_OUT ?= /tmp/berth-bench-ship.txt
.PHONY: bench-ship
bench-ship: test-deps
	@[ "$$(id -u)" -eq 0 ] || { echo "make bench-ship must run as root" >&2; exit 1; }
	$(GO) test -run '^$$' -bench '^Benchmark(Pull|Push|Build|BuildCached)$$' -benchtime 10x -timeout 20m ./bench/ > $(BENCH_SHIP_OUT) || \
		{ cat $(BENCH_SHIP_OUT); exit 1; }
	$(GO) test -run '^$$' -bench 'Reset' -timeout 10m ./sandbox/ >> $(BENCH_SHIP_OUT) || \
		{ cat $(BENCH_SHIP_OUT); exit 1; }
	cat $(BENCH_SHIP_OUT)

demo-deps:
	@[ "$$(id -u)" -eq 0 ] || { echo "make demo must run as root: it installs Debian packages and writes the image store (/var/lib/berth, or \$$BERTH_ROOT)" >&2; exit 1; }
	hack/deps.sh demo

test-deps:
	@[ "$$(id -u)" -eq 0 ] || { echo "make test must run as root: the tests mount overlays, create namespaces and cgroups" >&2; exit 1; }
	hack/deps.sh test

bench-deps:
	@[ "$$(id -u)" -eq 0 ] || { echo "make bench must run as root: it installs Debian packages and runs sandboxes" >&2; exit 1; }
	hack/deps.sh bench

clean:
	rm -rf bin

# The plugin protocol's generated code is committed; proto regenerates it
# with buf and protoc-gen-go{,-grpc} built as Go tools from tools/go.mod
# (no system protoc; the first run builds buf, about 1.5 min), and
# proto-check fails if the committed code is not what the .proto files give.
PROTO_TOOL = $(GO) tool -modfile=tools/go.mod
proto:
	$(PROTO_TOOL) buf lint plugin/proto
	$(PROTO_TOOL) buf generate --template plugin/proto/buf.gen.yaml plugin/proto

proto-check: proto
	git diff --exit-code -- plugin/internal/pb
	test -z "$$(git status --porcelain -- plugin/internal/pb)"
.PHONY: proto proto-check
