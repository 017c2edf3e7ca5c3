#!/usr/bin/env bash
# Runs CI as it runs after a stop: a fresh clone of the committed main,
# `.ci/run` with CI=true and no standard input. Catches steps that only work
# because of something left on this machine's work tree.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
git clone -q "$top" "$dir/ci"
cd "$dir/ci"
CI=true bash .ci/run </dev/null
