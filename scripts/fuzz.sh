#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target in the module for a fixed -fuzztime each
# (a duration such as 5m, or an input count such as 20000x; default 20000x):
# go test -fuzz accepts one target per run, so this finds them.
set -euo pipefail
fuzztime=${1:-20000x}
cd "$(dirname "$0")/.."
found=0
while IFS= read -r file; do
	pkg=$(dirname "$file")
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(f \*testing\.F\)' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/'); do
		found=$((found + 1))
		echo "fuzz: $pkg $target for $fuzztime"
		go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime"
	done
done < <(find . -name '*_test.go' -not -path './.git/*' | sort)
echo "fuzz: ran $found targets"
