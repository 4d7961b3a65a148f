/* fuzz_control: the control socket's line and machine protocols (lua/rollout/control.lua)
 * on arbitrary bytes.
 *
 * The framing and the command parser are Lua, so this target embeds the whole host as
 * main.c sets it up (the allocator, every C module, the loop) and feeds each input, as the
 * byte stream of one client connection, to fuzz/control_harness.lua, which drives the
 * server's connection handler and checks what it sends back (see that file). The input runs
 * as the main task of one loop run, as a connection runs as a task in the engine. Lua lines
 * reached count as coverage (fuzz_lua_cover), so the fuzzer is guided through the Lua code
 * and the C it calls (json, units, budget, alloc, loop). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_lua.h"
#include "rollout/alloc.h"
#include "rollout/loop.h"
#include "rollout/modules.h"

static lua_State *L;
static int harness = LUA_NOREF;

static void close_host(void) {
    loop_close();
    lua_close(L);
}

static void setup(void) {
    L = alloc_newstate();
    if (!L) abort();
    alloc_set_limit((size_t)512 << 20); /* string.rep from the REPL is a memory error, not an OOM kill */
    luaL_openlibs(L);
    loop_init(L, 0);
    modules_preload(L);
    const char *dir = getenv("ROLLOUT_LUADIR");
    if (!dir || !*dir) dir = FUZZ_LUADIR;
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/../?.lua", dir, dir, dir);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rollout");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) fuzz_lua_fail(L, "require rollout");
    lua_setglobal(L, "rollout");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "fuzz.control_harness");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) fuzz_lua_fail(L, "fuzz/control_harness.lua");
    harness = luaL_ref(L, LUA_REGISTRYINDEX);
    fuzz_lua_cover(L);
    atexit(close_host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L) setup();
    lua_rawgeti(L, LUA_REGISTRYINDEX, harness);
    lua_pushlstring(L, (const char *)data, size);
    int code = 0;
    if (loop_run_main(L, 1, &code) != 0) abort(); /* the check's message is on stderr */
    lua_settop(L, 0);
    return 0;
}
