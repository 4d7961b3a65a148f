#!/bin/sh
# tools/valgrind.sh [SPEC...]: the test suite under valgrind's memcheck (`make valgrind`).
#
# Runs `./rollout test SPEC...` (default: spec) under memcheck and fails when valgrind finds
# any error (invalid reads and writes, uses of uninitialised values, bad frees) or any
# definitely lost block; "still reachable" memory at exit is not a leak. The library noise
# that is no bug of ours (libcurl/OpenSSL one-time init, libev, ld.so) is suppressed by
# tools/valgrind.supp, each entry with the reason.
#
# Only the process running the specs is checked by default: it holds the engine, the loop,
# every C module and most specs. VALGRIND_CHILDREN=1 also checks the rollout processes that
# specs start (`rollout run`, `simulate`, ctl ...), at many times the cost; servers (HAProxy,
# Python, sample-service) are never traced.
#
# Specs whose timing cannot hold at valgrind's speed may fail; that is reported but it is
# not a memcheck failure. Exit status: 0 clean, 1 memcheck errors or definite leaks, 2 setup.
set -u
cd "$(dirname "$0")/.." || exit 2
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
[ -x ./rollout ] || { echo "valgrind.sh: build ./rollout first (make)" >&2; exit 2; }

out=build/valgrind
rm -rf "$out"
mkdir -p "$out"
children=no
[ "${VALGRIND_CHILDREN:-0}" = 1 ] && children=yes
[ $# -eq 0 ] && set -- spec

# --trace-children-skip: everything but our own binary. --run-libc-freeres=no: glibc 2.36's
# exit-time cleanup of getaddrinfo_a's request pool (gai_misc.c free_res) frees rows of a
# pool array it never initialised (an invalid free inside libc, after main returned);
# without that cleanup glibc's own memory is merely still reachable, which is no leak.
valgrind --tool=memcheck --run-libc-freeres=no --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --track-origins=yes --num-callers=30 --suppressions=tools/valgrind.supp --gen-suppressions=all \
  --trace-children=$children --trace-children-skip='/usr/*,/bin/*,/sbin/*,*python*,*/sample-service,*/loadgen' \
  --log-file="$out/memcheck.%p.log" \
  ./rollout test "$@" --timeout 120 > "$out/suite.log" 2>&1
suite=$?
tail -n 1 "$out/suite.log"

errors=0
for log in "$out"/memcheck.*.log; do
  [ -f "$log" ] || continue
  n=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
  lost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)
  if [ -z "$n" ]; then
    continue # a process that exec'd something else or was killed before its summary
  fi
  if [ "$n" != 0 ]; then
    errors=$((errors + n))
    echo "valgrind: $n error(s), definitely lost ${lost:-0} bytes: $log"
  fi
done
checked=$(ls "$out"/memcheck.*.log 2>/dev/null | wc -l)
if [ "$errors" -ne 0 ]; then
  echo "valgrind: $errors memcheck error(s) in $checked process(es); logs in $out (suppressions to copy are in them)"
  exit 1
fi
echo "valgrind: clean: no memcheck errors and no definite leaks in $checked process(es) (suite exit $suite)"
exit 0
