#!/usr/bin/env bash
# hack/fuzz.sh [TARGET...]: run each Go fuzz target briefly, one after the
# other (go test -fuzz takes one target per run). make test calls it after
# the ordinary tests, which already run every target's seed corpus.
#
# A TARGET is PACKAGE:FuzzName; with none, every target below runs.
# FUZZTIME sets how long each fuzzes (default 5s: the whole list then takes
# about 80 s on two cores). An input that fails is written to the package's
# testdata/fuzz/FuzzName/ directory by go test: commit it with the fix, as a
# regression seed. Set GO to choose the toolchain (default: hack/ensure-go.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-$(hack/ensure-go.sh)}
FUZZTIME=${FUZZTIME:-5s}

# Everything that parses input berth does not control: layer tars, image
# layouts and archives, seccomp profiles, references, command line specs.
targets=(
	./layerfs:FuzzUnpackTar
	./layerfs:FuzzImportLayout
	./layerfs:FuzzImportDockerArchive
	./layerfs:FuzzParseReference
	./security:FuzzSeccompProfile
	./security:FuzzSeccompRules
	./security:FuzzSeccompEvaluate
	./cmd/berth:FuzzParseBytes
	./cmd/berth:FuzzCPUQuota
	./cmd/berth:FuzzParsePortMapping
	./cmd/berth:FuzzParseIDMaps
)
if [ $# -gt 0 ]; then
	targets=("$@")
fi

for t in "${targets[@]}"; do
	pkg=${t%%:*} name=${t#*:}
	printf 'fuzz: %s %s for %s\n' "$pkg" "$name" "$FUZZTIME" >&2
	# -run '^$': the ordinary tests ran already; the target's seeds still
	# run first, as its baseline. Minimizing each new interesting input
	# would take most of a short run.
	"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 0 -timeout 10m "$pkg"
done
