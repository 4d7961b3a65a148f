# rollout: build, test, bench, demo, deps, install.
PREFIX    ?= /usr/local
CC        ?= cc
PKGS      := lua5.4 libcurl yaml-0.1 libcjson libedit
WARN      := -Wall -Wextra -Werror
CFLAGS    ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Iinclude $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
             -DROLLOUT_LUADIR='"$(PREFIX)/share/rollout/lua"'
LDLIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev -lm

SRC  := $(sort $(wildcard src/*.c))
OBJ  := $(SRC:src/%.c=build/%.o)
HDR  := $(wildcard include/rollout/*.h)

# Debian packages that building, testing, benchmarking and the demo need.
DEPS := build-essential pkg-config liblua5.4-dev lua5.4 libcurl4-openssl-dev libcjson-dev libev-dev \
        libyaml-dev libedit-dev haproxy nginx-light wrk socat curl python3 python3-prometheus-client python3-scipy \
        prometheus prometheus-alertmanager etcd-server iptables iproute2 lua-check clang libclang-rt-14-dev \
        util-linux procps openssl chromium jq bc faketime valgrind

.PHONY: all deps test asan bench install clean clean-build check-lua demo
all: rollout $(if $(wildcard sample/service.c),sample-service) $(if $(wildcard sample/loadgen.c),loadgen)

# The sample service (the role podinfo plays for Flagger) and a steady-rate load generator.
sample-service: sample/service.c $(wildcard sample/*.h)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -o $@ sample/service.c -lev -lm

loadgen: sample/loadgen.c $(wildcard sample/*.h)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -o $@ sample/loadgen.c -lev -lm

rollout: $(OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $(OBJ) $(LDLIBS)

build/%.o: src/%.c $(HDR) | build
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build:
	mkdir -p build

deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing $$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "make deps: all packages present"; fi

# Every test: the Lua specs inside the real binary (they start real servers themselves).
test: deps all
	./rollout test spec

# AddressSanitizer + UndefinedBehaviorSanitizer build (./rollout-asan, objects in
# build-asan/), whole suite. Specs start child rollouts with the running binary.
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_OBJ   := $(SRC:src/%.c=build-asan/%.o)

rollout-asan: $(ASAN_OBJ)
	clang $(ALL_CFLAGS) $(ASAN_FLAGS) -o $@ $(ASAN_OBJ) $(LDLIBS)

build-asan/%.o: src/%.c $(HDR)
	@mkdir -p build-asan
	clang $(ALL_CFLAGS) $(ASAN_FLAGS) -c -o $@ $<

asan: deps all rollout-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ./rollout-asan test spec

bench: deps rollout
	./rollout bench/run.lua

# Decision quality: shared + generated labelled scenarios, static thresholds vs the judge
# (tools/eval.lua; docs/judge.md explains the labels and the table).
.PHONY: eval
eval: rollout
	./rollout tools/eval.lua

install: rollout
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/rollout/lua
	install -m 755 rollout $(DESTDIR)$(PREFIX)/bin/rollout
	cp -R lua/rollout $(DESTDIR)$(PREFIX)/share/rollout/lua/
	cp -R playbooks $(DESTDIR)$(PREFIX)/share/rollout/

check-lua:
	luacheck -q lua spec playbooks tools bench

clean-build:
	rm -rf build rollout build-asan rollout-asan build-fuzz sample-service loadgen

clean: clean-build

# The main job: a real canary on loopback (HAProxy, the sample service as v2.9.0 and v3.0.0,
# load), the runbook's five stages in seconds, live progress. By default the canary starts
# failing in stage 2 and is rolled back; GOOD=1 promotes a healthy one; PROMETHEUS=1 reads
# metrics through a real Prometheus, whose alert in Alertmanager can fire critical_alert.
demo: deps all
	./rollout tools/demo.lua $(if $(GOOD),--good) $(if $(PROMETHEUS),--prometheus)

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
FUZZ_DEPS_promtext := promtext
FUZZ_DEPS_json     := json
FUZZ_DEPS_yaml     := yaml json units stats
FUZZ_DEPS_units    := units promtext stats
FUZZ_DEPS_control  := $(filter-out main,$(SRC:src/%.c=%))

.PHONY: fuzz fuzz-build fuzz-merge
.PRECIOUS: build-fuzz/%.o
build-fuzz/%.o: src/%.c $(HDR)
	@mkdir -p build-fuzz
	clang $(ALL_CFLAGS) $(FUZZ_FLAGS) -c -o $@ $<

.SECONDEXPANSION:
build-fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_lua.h $(HDR) $$(call fuzz_objs,$$(FUZZ_DEPS_$$*))
	clang $(ALL_CFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(call fuzz_objs,$(FUZZ_DEPS_$*)) $(LDLIBS)

fuzz-build: $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)

fuzz: deps fuzz-build
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
valgrind: deps all
	tools/valgrind.sh
