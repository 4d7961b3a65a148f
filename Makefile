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
        util-linux procps openssl

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

install: rollout
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/rollout/lua
	install -m 755 rollout $(DESTDIR)$(PREFIX)/bin/rollout
	cp -R lua/rollout $(DESTDIR)$(PREFIX)/share/rollout/lua/
	cp -R playbooks $(DESTDIR)$(PREFIX)/share/rollout/

check-lua:
	luacheck -q lua spec playbooks

clean-build:
	rm -rf build rollout build-asan rollout-asan sample-service loadgen

clean: clean-build

# The main job. Until the full canary demo lands this shows the host working.
demo: deps rollout
	./rollout examples/host.lua
