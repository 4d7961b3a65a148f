# rollout: build, test, bench, demo, deps, install, dist.
#
# The two commands of a fresh Debian 12: `make demo` and `make test`. Each installs the
# Debian packages its target needs first (as root; docs/install.md lists them per target),
# then builds. The pkg-config flags are read when the first compile runs, not when make
# parses this file, so one invocation works on a machine that had none of the -dev packages.
PREFIX    ?= /usr/local
CC        ?= cc
PKGS      := lua5.4 libcurl yaml-0.1 libcjson libedit
WARN      := -Wall -Wextra -Werror
CFLAGS    ?= -O2 -g
JOBS      ?= 10
ASAN_JOBS ?= 6

# Evaluated at their first use (a recipe), then kept: VAR = $(eval VAR := $$(shell ...))$(VAR).
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $$(shell pkg-config --libs $(PKGS)))$(PKG_LIBS)

# The version: `git describe` of the newest v* tag (v0.2.0-3-gabc1234[-dirty] -> 0.2.0-3-gabc1234),
# else, with no tag yet, VERSION's base plus the commit count and hash (0.1.0-57-gabc1234); in
# a tarball (no .git) the VERSION file `make dist` wrote. VERSION holds the base in git.
VERSION = $(eval VERSION := $$(shell sh tools/version.sh))$(VERSION)

ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Iinclude $(PKG_CFLAGS) \
             -DROLLOUT_LUADIR='"$(PREFIX)/share/rollout/lua"'
LDLIBS     = $(PKG_LIBS) -lev -lm

SRC  := $(sort $(wildcard src/*.c))
OBJ  := $(SRC:src/%.c=build/%.o)
HDR  := $(wildcard include/rollout/*.h)

# Debian packages, by target (docs/install.md is the table; keep the two in step).
DEPS_BUILD    := build-essential pkg-config liblua5.4-dev libcurl4-openssl-dev libcjson-dev libev-dev \
                 libyaml-dev libedit-dev
DEPS_DEMO     := $(DEPS_BUILD) haproxy $(if $(PROMETHEUS),prometheus prometheus-alertmanager)
DEPS_TEST     := $(DEPS_BUILD) git haproxy nginx-light prometheus prometheus-alertmanager etcd-server \
                 python3 python3-prometheus-client python3-scipy python3-kubernetes curl openssl \
                 iproute2 iptables faketime tmux chromium man-db
DEPS_ASAN     := $(DEPS_TEST) clang libclang-rt-14-dev
DEPS_FUZZ     := $(DEPS_BUILD) clang libclang-rt-14-dev
DEPS_BENCH    := $(DEPS_TEST) wrk socat jq bc
DEPS_LINT     := lua-check clang-format
DEPS_VALGRIND := $(DEPS_TEST) valgrind
DEPS          := $(sort $(DEPS_BENCH) $(DEPS_ASAN) $(DEPS_LINT) $(DEPS_VALGRIND) prometheus-alertmanager)

# apt-install(packages): install those not yet installed (root only; else say what is missing).
define apt-install
@missing=$$(for p in $(sort $(1)); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
if [ -z "$$missing" ]; then echo "make $@: all packages present"; \
elif [ "$$(id -u)" != 0 ]; then echo "make $@: missing packages (run as root, or apt-get install them):" $$missing >&2; exit 1; \
else echo "make $@: installing" $$missing; \
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; fi
endef

.PHONY: all deps deps-build deps-demo deps-test deps-asan deps-fuzz deps-bench deps-lint deps-valgrind \
        test asan bench install uninstall dist clean clean-build check-lua format format-check lint demo FORCE
all: rollout $(if $(wildcard demo/service.c),sample-service) $(if $(wildcard demo/loadgen.c),loadgen)

deps:          ; $(call apt-install,$(DEPS))
deps-build:    ; $(call apt-install,$(DEPS_BUILD))
deps-demo:     ; $(call apt-install,$(DEPS_DEMO))
deps-test:     ; $(call apt-install,$(DEPS_TEST))
deps-asan:     ; $(call apt-install,$(DEPS_ASAN))
deps-fuzz:     ; $(call apt-install,$(DEPS_FUZZ))
deps-bench:    ; $(call apt-install,$(DEPS_BENCH))
deps-lint:     ; $(call apt-install,$(DEPS_LINT))
deps-valgrind: ; $(call apt-install,$(DEPS_VALGRIND))

# The sample service (the role podinfo plays for Flagger) and a steady-rate load generator.
sample-service: demo/service.c $(wildcard demo/*.h)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -o $@ demo/service.c -lev -lm

loadgen: demo/loadgen.c $(wildcard demo/*.h)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -o $@ demo/loadgen.c -lev -lm

# Linked beside and renamed into place: a spec that rebuilds (make install, make dist) never
# leaves a half-written binary under the spec files running beside it (rollout test -j).
rollout: $(OBJ)
	$(CC) $(ALL_CFLAGS) -o $@.tmp $(OBJ) $(LDLIBS) && mv -f $@.tmp $@

build/%.o: src/%.c $(HDR) | build
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build:
	mkdir -p build

# Benchmark-only C modules (bench/c/, e.g. require("rollout.bench.promtext")): linked into
# ./rollout-bench for `make bench` (and its spec), never into the product binary.
BENCH_SRC := $(sort $(wildcard bench/c/*.c))
BENCH_OBJ := $(BENCH_SRC:bench/c/%.c=build/bench/%.o)

rollout-bench: $(OBJ) $(BENCH_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $(OBJ) $(BENCH_OBJ) $(LDLIBS)

build/bench/%.o: bench/c/%.c bench/c/bench_modules.h $(HDR) | build
	@mkdir -p build/bench
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# build/version holds the version main.c was compiled with; rewritten only when it changes.
build/version: FORCE | build
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@
build/main.o build-asan/main.o: build/version
build/main.o build-asan/main.o: ALL_CFLAGS += -DROLLOUT_VERSION='"$(VERSION)"'

# The targets that install packages run the build in a second make, so that the build
# reads pkg-config after the packages are there, and never in parallel with apt-get.
# Every test: the Lua specs inside the real binary (they start real servers themselves),
# spec files in parallel (JOBS at once; most files mostly wait on servers and clocks). The
# sanitizer build costs several times the CPU, so make asan runs fewer at once (ASAN_JOBS).
test: deps-test
	$(MAKE) all rollout-bench
	./rollout test -j $(JOBS) spec

# AddressSanitizer + UndefinedBehaviorSanitizer build (./rollout-asan, objects in
# build-asan/), whole suite. Specs start child rollouts with the running binary.
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_OBJ   := $(SRC:src/%.c=build-asan/%.o)

rollout-asan: $(ASAN_OBJ)
	clang $(ALL_CFLAGS) $(ASAN_FLAGS) -o $@.tmp $(ASAN_OBJ) $(LDLIBS) && mv -f $@.tmp $@

build-asan/%.o: src/%.c $(HDR)
	@mkdir -p build-asan
	clang $(ALL_CFLAGS) $(ASAN_FLAGS) -c -o $@ $<

asan: deps-asan
	$(MAKE) all rollout-bench rollout-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ./rollout-asan test -j $(ASAN_JOBS) spec

bench: deps-bench
	$(MAKE) all rollout-bench
	./rollout-bench bench/run.lua

# Decision quality: shared + generated labelled scenarios, static thresholds vs the judge
# (tools/eval.lua; docs/judge.md explains the labels and the table).
.PHONY: eval
eval: rollout
	./rollout tools/eval.lua

# ---- install / uninstall / dist -------------------------------------------------------------
# `make install [PREFIX=/usr/local] [DESTDIR=]`: the binary, the Lua library, the playbooks,
# docs/ and the man pages. Every file and directory it creates is listed in the manifest
# $(PREFIX)/share/rollout/install-manifest, and `make uninstall` removes exactly those.
DOC_FILES := $(wildcard README.md LICENSE CHANGELOG.md)
MAN1      := $(wildcard man/*.1)
MAN5      := $(wildcard man/*.5)

install: rollout
	@sh tools/install.sh '$(DESTDIR)' '$(PREFIX)' rollout '$(DOC_FILES)' '$(MAN1)' '$(MAN5)'

uninstall:
	@sh tools/install.sh --uninstall '$(DESTDIR)' '$(PREFIX)'

# rollout-VERSION.tar.gz: `git archive` of HEAD plus a VERSION file holding the full version
# (a dirty tree's uncommitted changes are not in it; the version then says -dirty).
dist:
	@top=$$(git rev-parse --show-toplevel 2>/dev/null); \
	if [ -z "$$top" ] || [ "$$(cd "$$top" && pwd -P)" != "$$(pwd -P)" ]; then \
	  echo "make dist: needs a git checkout of rollout (this is no git work tree; a tarball is made from one)" >&2; exit 2; fi; \
	v='$(VERSION)'; d=rollout-$$v; rm -rf build/dist && mkdir -p build/dist/$$d && \
	git archive --format=tar --prefix=$$d/ HEAD | tar -x -C build/dist && \
	echo "$$v" > build/dist/$$d/VERSION && \
	tar -C build/dist -czf $$d.tar.gz $$d && rm -rf build/dist && echo $$d.tar.gz

check-lua: deps-lint
	luacheck -q lua spec playbooks tools bench demo

# The C follows .clang-format (clang-format 14): format-check names every file that drifts
# and fails; `make format` rewrites them in place. `make lint` is both checks, as CI runs them.
C_FORMAT_FILES = $(sort $(wildcard src/*.c include/rollout/*.h bench/c/*.c bench/c/*.h fuzz/*.c fuzz/*.h \
                 demo/*.c demo/*.h))
format-check: deps-lint
	@clang-format --dry-run -Werror $(C_FORMAT_FILES) && echo "format-check: $(words $(C_FORMAT_FILES)) C files follow .clang-format"

format: deps-lint
	clang-format -i $(C_FORMAT_FILES)

lint: check-lua format-check

clean-build:
	rm -rf build rollout build-asan rollout-asan rollout-bench build-fuzz sample-service loadgen

clean: clean-build

# The main job: a real canary on loopback (HAProxy, the sample service as v2.9.0 and v3.0.0,
# load), the runbook's five stages in seconds, live progress. By default the canary starts
# failing in stage 2 and is rolled back; GOOD=1 promotes a healthy one; PROMETHEUS=1 reads
# metrics through a real Prometheus, whose alert in Alertmanager can fire critical_alert.
demo: deps-demo
	$(MAKE) all
	./rollout demo/run.lua $(if $(GOOD),--good) $(if $(PROMETHEUS),--prometheus)

# ---- fuzzing (libFuzzer, clang) -----------------------------------------------------------
# `make fuzz FUZZ_SECONDS=N` builds every target in fuzz/ with ASan + UBSan and runs each for
# N seconds (default 60) on its corpus: fuzz/corpus/<target>/ (kept in the repo, small) is
# read, new inputs go to build-fuzz/corpus/<target>/ and crashes to build-fuzz/crash-<target>-*.
# `make fuzz-merge` folds the new inputs that add coverage into fuzz/corpus (-merge=1);
# tools/fuzz_coverage.sh prints the line coverage the corpora reach.
# fuzz/regressions/<target>/ holds every crash input found; `make fuzz` replays them first.
# -detect_leaks=0: libFuzzer would run LeakSanitizer after every input (the lua_State keeps
# memory between inputs by design); leaks are still checked once at exit.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := promtext json yaml units control
FUZZ_FLAGS   := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
                -fno-sanitize-recover=undefined -DFUZZ_LUADIR='"$(CURDIR)/lua"'
FUZZ_ENV     := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fuzz_objs = $(patsubst %,build-fuzz/%.o,$(1))
FUZZ_DEPS_promtext := promtext promtext_select
FUZZ_DEPS_json     := json alloc units
FUZZ_DEPS_control  := $(filter-out main,$(SRC:src/%.c=%))
FUZZ_DEPS_yaml     := $(FUZZ_DEPS_control)
FUZZ_DEPS_units    := $(FUZZ_DEPS_control)

.PHONY: fuzz fuzz-build fuzz-merge
.PRECIOUS: build-fuzz/%.o
build-fuzz/%.o: src/%.c $(HDR)
	@mkdir -p build-fuzz
	clang $(ALL_CFLAGS) $(FUZZ_FLAGS) -c -o $@ $<

.SECONDEXPANSION:
build-fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_lua.h $(wildcard fuzz/*_ref.c) $(HDR) $$(call fuzz_objs,$$(FUZZ_DEPS_$$*))
	clang $(ALL_CFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(call fuzz_objs,$(FUZZ_DEPS_$*)) $(LDLIBS)

fuzz-build: $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)

fuzz: deps-fuzz
	$(MAKE) fuzz-build
	@$(MAKE) --no-print-directory fuzz-run

.PHONY: fuzz-run
fuzz-run:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t fuzz/corpus/$$t; \
	  dict=; [ -f fuzz/$$t.dict ] && dict=-dict=fuzz/$$t.dict; \
	  if [ -d fuzz/regressions/$$t ] && [ -n "$$(ls fuzz/regressions/$$t)" ]; then \
	    echo "fuzz $$t: replaying fuzz/regressions/$$t"; \
	    $(FUZZ_ENV) build-fuzz/fuzz_$$t -runs=0 $$dict fuzz/regressions/$$t >/dev/null 2>build-fuzz/replay-$$t.log \
	      || { tail -40 build-fuzz/replay-$$t.log; exit 1; }; fi; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  $(FUZZ_ENV) build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -detect_leaks=0 -print_final_stats=1 $$dict -artifact_prefix=build-fuzz/crash-$$t- \
	    build-fuzz/corpus/$$t fuzz/corpus/$$t 2>build-fuzz/fuzz-$$t.log \
	    || { tail -60 build-fuzz/fuzz-$$t.log; exit 1; }; \
	  grep -E '^#[0-9]+.*(DONE|cov:)' build-fuzz/fuzz-$$t.log | tail -1; \
	  grep -E 'stat::number_of_executed_units' build-fuzz/fuzz-$$t.log; \
	done

fuzz-merge: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  $(FUZZ_ENV) build-fuzz/fuzz_$$t -merge=1 fuzz/corpus/$$t build-fuzz/corpus/$$t 2>&1 | tail -1; done

# The suite under valgrind's memcheck: no errors, no definite leaks (tools/valgrind.sh).
.PHONY: valgrind
valgrind: deps-valgrind
	$(MAKE) all
	tools/valgrind.sh
