/* fuzz_lua.h: the one lua_State a fuzz target keeps for its whole run (as the host keeps
 * one), with the C modules the target links preloaded and package.path pointing at the
 * source tree's lua/ (FUZZ_LUADIR, set by the Makefile; $ROLLOUT_LUADIR overrides), so a
 * target can call the engine's Lua code as well as the C parsers.
 *
 * A target calls fuzz_lua() once per input and fuzz_lua_done() after it: the stack is
 * emptied and, every 256 inputs, the garbage collector runs a full cycle so a leak in a
 * binding shows up as growth (LeakSanitizer checks what is left at exit after lua_close).
 * Any Lua error a target does not expect is a finding: fuzz_lua_fail() aborts with it. */
#ifndef ROLLOUT_FUZZ_LUA_H
#define ROLLOUT_FUZZ_LUA_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef FUZZ_LUADIR
#define FUZZ_LUADIR "lua"
#endif

typedef struct {
    const char *name;
    lua_CFunction open;
} fuzz_module;

static lua_State *fuzz_L;
static unsigned long fuzz_inputs;

static inline void fuzz_lua_close(void) {
    if (fuzz_L) lua_close(fuzz_L);
    fuzz_L = NULL;
}

static inline _Noreturn void fuzz_lua_fail(lua_State *L, const char *what) {
    fprintf(stderr, "fuzz: %s: %s\n", what, lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no message)");
    abort();
}

#ifdef FUZZ_FULL_HOST
/* A target whose Lua reaches the playbook loader (sandbox, load budget) gets the host's
 * state: rollout.alloc's allocator, the loop and every C module, as the binary has them. */
#include "rollout/alloc.h"
#include "rollout/loop.h"
#include "rollout/modules.h"
#endif

/* The state, created on first use with `modules` in package.preload. [-0, +0, -] */
static inline lua_State *fuzz_lua(const fuzz_module *modules) {
    if (fuzz_L) return fuzz_L;
#ifdef FUZZ_FULL_HOST
    lua_State *L = alloc_newstate();
    if (!L) abort();
    alloc_set_limit((size_t)512 << 20);
    luaL_openlibs(L);
    loop_init(L, 0);
    modules_preload(L);
#else
    lua_State *L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
#endif
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const fuzz_module *m = modules; m && m->name; m++) {
        lua_pushcfunction(L, m->open);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
    const char *dir = getenv("ROLLOUT_LUADIR");
    if (!dir || !*dir) dir = FUZZ_LUADIR;
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", dir, dir);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    fuzz_L = L;
    atexit(fuzz_lua_close);
    return L;
}

/* require(name), raising a finding if the module cannot load. [-0, +1, -] */
static inline void fuzz_require(lua_State *L, const char *name) {
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) fuzz_lua_fail(L, name);
}

/* Line coverage of Lua code as libFuzzer features: liblua is not instrumented, so without
 * this the fuzzer is blind to which Lua lines an input reached. Each (chunk, line) pair
 * counts into a slot of libFuzzer's extra counters. Threads created later inherit the hook. */
static uint8_t fuzz_lua_lines[1 << 15] __attribute__((used, section("__libfuzzer_extra_counters")));

static void fuzz_line_hook(lua_State *L, lua_Debug *ar) {
    if (!lua_getinfo(L, "S", ar)) return;
    uintptr_t h = ((uintptr_t)ar->source >> 3) * 2654435761u ^ (uintptr_t)ar->currentline * 40503u;
    fuzz_lua_lines[h % sizeof fuzz_lua_lines]++;
}

static inline void fuzz_lua_cover(lua_State *L) { lua_sethook(L, fuzz_line_hook, LUA_MASKLINE, 0); }

static inline void fuzz_lua_done(lua_State *L) {
    lua_settop(L, 0);
    if (++fuzz_inputs % 256 == 0) lua_gc(L, LUA_GCCOLLECT);
}

#endif
