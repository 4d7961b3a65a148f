#!/bin/sh
# tools/version.sh: print rollout's version (the Makefile compiles it into the binary).
#   in a git checkout with a v* tag:  git describe (v0.2.0-3-gabc1234[-dirty] -> 0.2.0-3-gabc1234[-dirty])
#   in a git checkout with no tag:    VERSION's base, the commit count and the hash (0.1.0-57-gabc1234[-dirty])
#   in a tarball (no .git):           the VERSION file, which `make dist` wrote with the full version
set -u
cd "$(dirname "$0")/.." || exit 1
base=$(head -n 1 VERSION 2>/dev/null || echo 0.0.0)
top=$(git rev-parse --show-toplevel 2>/dev/null || true)
if [ -n "$top" ] && [ "$(cd "$top" && pwd -P)" = "$(pwd -P)" ]; then
  if d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
    echo "${d#v}"; exit 0
  fi
  n=$(git rev-list --count HEAD 2>/dev/null) && h=$(git describe --always --dirty --abbrev=7 2>/dev/null) &&
    { echo "$base-$n-g$h"; exit 0; }
fi
echo "$base"
