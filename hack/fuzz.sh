#!/usr/bin/env bash
# hack/fuzz.sh [TARGET...]: run each Go fuzz target briefly, one after the
# other (go test -fuzz takes one target per run). make test calls it after
# the ordinary tests, which already run every target's seed corpus.
#
# A TARGET is PACKAGE:FuzzName[:EXECS]; with none, every target below runs.
# Each fuzzes for a number of executions, a few seconds' worth on two cores
# (the whole list takes about a minute): a duration (-fuzztime 5s) would hit
# a race in Go 1.26's fuzzing coordinator, which fails a target with
# "context deadline exceeded" when its time runs out mid-call
# (golang/go#75804, fixed in Go 1.27). FUZZTIME, if set, replaces every
# budget (e.g. FUZZTIME=2m to fuzz for longer by hand). An input that
# fails is written to the package's testdata/fuzz/FuzzName/ directory by
# go test: commit it with the fix, as a regression seed. Set GO to choose the toolchain (default: hack/ensure-go.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-$(hack/ensure-go.sh)}
FUZZTIME=${FUZZTIME:-}

# Everything that parses input berth does not control: layer tars, image
# layouts and archives, seccomp profiles, references, command line specs,
# tar streams copied into a sandbox.
targets=(
	./layerfs:FuzzUnpackTar:3000
	./layerfs:FuzzUnpackLimits:2000
	./layerfs:FuzzImportLayout:2000
	./layerfs:FuzzImportDockerArchive:2000
	./layerfs:FuzzImportArchiveTar:2000
	./layerfs:FuzzParseReference:50000
	./security:FuzzSeccompProfile:20000
	./security:FuzzSeccompRules:5000
	./security:FuzzSeccompEvaluate:50000
	./cmd/berth:FuzzParseBytes:50000
	./cmd/berth:FuzzCPUQuota:50000
	./cmd/berth:FuzzParsePortMapping:50000
	./cmd/berth:FuzzParseIDMaps:50000
	./internal/safetree:FuzzReadTarStaysInside:3000
)
if [ $# -gt 0 ]; then
	targets=("$@")
fi

for t in "${targets[@]}"; do
	IFS=: read -r pkg name execs <<<"$t"
	budget=${FUZZTIME:-${execs:-5000}x}
	printf 'fuzz: %s %s for %s\n' "$pkg" "$name" "$budget" >&2
	# -run '^$': the ordinary tests ran already; the target's seeds still
	# run first, as its baseline. Minimizing each new interesting input
	# would take most of a short run.
	"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$budget" -fuzzminimizetime 0 -timeout 10m "$pkg"
done
