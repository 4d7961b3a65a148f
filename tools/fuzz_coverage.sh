#!/bin/sh
# tools/fuzz_coverage.sh [TARGET...]: source line coverage of each fuzz target's corpus.
#
# Builds fuzz/fuzz_TARGET.c with clang's source-based coverage (no sanitizers), runs every
# input of fuzz/corpus/TARGET and fuzz/regressions/TARGET once, and prints llvm-cov's line and
# branch coverage of the C files the target is about. Objects go to build-fuzz/cov/.
set -eu
cd "$(dirname "$0")/.."
[ $# -eq 0 ] && set -- promtext json yaml units control
out=build-fuzz/cov
mkdir -p "$out"
PKGS="lua5.4 libcurl yaml-0.1 libcjson libedit"
CFLAGS="-std=c11 -D_GNU_SOURCE -O1 -g -Iinclude $(pkg-config --cflags $PKGS) -DFUZZ_LUADIR=\"$PWD/lua\" \
  -fprofile-instr-generate -fcoverage-mapping -fsanitize=fuzzer"
LIBS="$(pkg-config --libs $PKGS) -lev -lm"

files_of() { # the C files a target links, and the ones its coverage is reported on
  case $1 in
    promtext) echo "promtext|promtext" ;;
    json) echo "json|json" ;;
    yaml) echo "yaml json units stats|yaml" ;;
    units) echo "units promtext stats|units" ;;
    control) echo "$(ls src/*.c | sed 's|src/||; s|\.c$||' | grep -v '^main$' | tr '\n' ' ')|json budget alloc loop" ;;
  esac
}

for t in "$@"; do
  spec=$(files_of "$t")
  link=${spec%%|*}
  report=${spec#*|}
  srcs=""
  for f in $link; do srcs="$srcs src/$f.c"; done
  clang $CFLAGS -o "$out/fuzz_$t" "fuzz/fuzz_$t.c" $srcs $LIBS
  rm -f "$out/$t".*.profraw
  inputs="fuzz/corpus/$t"
  [ -d "fuzz/regressions/$t" ] && inputs="$inputs fuzz/regressions/$t"
  LLVM_PROFILE_FILE="$out/$t.%p.profraw" ASAN_OPTIONS=detect_leaks=0 "$out/fuzz_$t" -runs=0 $inputs >/dev/null 2>&1 || true
  llvm-profdata-14 merge -sparse "$out/$t".*.profraw -o "$out/$t.profdata"
  show=""
  for f in $report; do show="$show src/$f.c"; done
  echo "== $t ($(ls fuzz/corpus/$t | wc -l) corpus inputs)"
  llvm-cov-14 report "$out/fuzz_$t" -instr-profile="$out/$t.profdata" $show | grep -v '^-'
done
