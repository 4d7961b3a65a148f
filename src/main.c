/* main.c: the `rollout` executable. Sets up one lua_State and the loop, finds the Lua
 * library (source tree or installed), and hands argv to lua/rollout/cli.lua, which runs as
 * the main task. Policy, including every command, lives in Lua. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "rollout/alloc.h"
#include "rollout/loop.h"
#include "rollout/modules.h"

/* The Makefile passes the version (tools/version.sh: git describe, else the VERSION file). */
#ifndef ROLLOUT_VERSION
#define ROLLOUT_VERSION "0.0.0-unknown"
#endif

#ifndef ROLLOUT_LUADIR
#define ROLLOUT_LUADIR "/usr/local/share/rollout/lua"
#endif

static int has_library(const char *dir) {
    char path[PATH_MAX];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/rollout/cli.lua", dir) >= (int)sizeof path) return 0;
    return stat(path, &st) == 0;
}

/* package.rollout_version: the version string rollout.version reads. [-0, +0, -] */
static void set_version(lua_State *L) {
    lua_getglobal(L, "package");
    lua_pushliteral(L, ROLLOUT_VERSION);
    lua_setfield(L, -2, "rollout_version");
    lua_pop(L, 1);
}

/* $ROLLOUT_LUADIR, else lua/ beside the binary (source tree), else ../share/rollout/lua
 * beside it (a relocated install), else the compiled-in install path. */
static int find_luadir(char *out, size_t n) {
    const char *env = getenv("ROLLOUT_LUADIR");
    if (env && *env) return snprintf(out, n, "%s", env), 1;
    char exe[PATH_MAX - 32];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(out, n, "%s/lua", exe);
        if (has_library(out)) return 1;
        snprintf(out, n, "%s/../share/rollout/lua", exe);
        if (has_library(out)) return 1;
    }
    snprintf(out, n, "%s", ROLLOUT_LUADIR);
    return has_library(out);
}

static void set_path(lua_State *L, const char *dir) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "rollout_luadir");
    lua_pop(L, 1);
}

/* The main task: require("rollout.cli").main(argv). [-0, +1, e] */
static int push_main(lua_State *L, int argc, char **argv) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rollout.cli");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "rollout: cannot load the Lua library: %s\n", lua_tostring(L, -1));
        return 0;
    }
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

int main(int argc, char **argv) {
    char luadir[PATH_MAX];
    if (!find_luadir(luadir, sizeof luadir)) {
        fprintf(stderr,
                "rollout: Lua library not found (looked beside the binary and in %s); "
                "set ROLLOUT_LUADIR\n",
                luadir);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);        /* a closed peer is an error return, never a dead engine */
    lua_State *L = alloc_newstate(); /* luaL_newstate on rollout.alloc's allocator */
    if (!L) return fprintf(stderr, "rollout: out of memory\n"), 3;
    luaL_openlibs(L);
    loop_init(L, 0);
    modules_preload(L);
    set_path(L, luadir);
    set_version(L);
    int code = 2;
    if (push_main(L, argc, argv)) loop_run_main(L, 1, &code);
    loop_close();
    lua_close(L);
    return code;
}
