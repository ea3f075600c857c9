#!/usr/bin/env bash
# Interleaved BenchmarkL2Hit (in-memory device, one goroutine, a cached
# 4 KiB read and a 4 KiB overwrite through the synchronous path) of two
# commits: before the writers gate (6ecf0a3) and after (HEAD by default).
# Usage: perf/results/2026-12-01-writers-gate/run.sh [old [new [rounds]]]
set -euo pipefail
old=${1:-6ecf0a3} new=${2:-HEAD} rounds=${3:-5}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/old" >/dev/null 2>&1 || true; git -C "$root" worktree remove --force "$tmp/new" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
for v in old new; do
	git -C "$root" worktree add -q "$tmp/$v" "${!v}"
	(cd "$tmp/$v/qcow2" && go test -c -o "$tmp/$v.test" .)
done
for ((i = 0; i < rounds; i++)); do
	for v in old new; do
		printf '%s ' "$v"
		(cd "$tmp/$v/qcow2" && "$tmp/$v.test" -test.run XXX -test.bench L2Hit -test.count=1 -test.benchtime=2s) |
			awk '/^Benchmark/ {printf "%s %s ", $1, $3} END {print ""}'
	done
done
