/* modules.c: the registration list of every C module (knot-resolver's habit: one place). */
#include "rollout/modules.h"

#include <lauxlib.h>

#include "rollout/fs.h"
#include "rollout/loop.h"
#include "rollout/units.h"

const rollout_module rollout_modules[] = {
    {"rollout.core", luaopen_rollout_core},
    {"rollout.units", luaopen_rollout_units},
    {"rollout.fs", luaopen_rollout_fs},
    {NULL, NULL},
};

void modules_preload(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const rollout_module *m = rollout_modules; m->name; m++) {
        lua_pushcfunction(L, m->open);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
}
