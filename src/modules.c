/* modules.c: the registration list of every C module (knot-resolver's habit: one place). */
#include "rollout/modules.h"

#include <lauxlib.h>

#include "rollout/codec.h"
#include "rollout/fs.h"
#include "rollout/http.h"
#include "rollout/loop.h"
#include "rollout/net.h"
#include "rollout/proc.h"
#include "rollout/stats.h"
#include "rollout/yaml.h"
#include "rollout/json.h"
#include "rollout/promtext.h"
#include "rollout/histogram.h"
#include "rollout/rng.h"
#include "rollout/units.h"
#include "rollout/journal.h"
#include "rollout/budget.h"
#include "rollout/alloc.h"
#include "rollout/edit.h"

const rollout_module rollout_modules[] = {
    {"rollout.core", luaopen_rollout_core},
    {"rollout.units", luaopen_rollout_units},
    {"rollout.fs", luaopen_rollout_fs},
    {"rollout.http", luaopen_rollout_http},
    {"rollout.rng", luaopen_rollout_rng},
    {"rollout.histogram", luaopen_rollout_histogram},
    {"rollout.promtext", luaopen_rollout_promtext},
    {"rollout.json", luaopen_rollout_json},
    {"rollout.yaml", luaopen_rollout_yaml},
    {"rollout.stats", luaopen_rollout_stats},
    {"rollout.proc", luaopen_rollout_proc},
    {"rollout.net", luaopen_rollout_net},
    {"rollout.journal.core", luaopen_rollout_journal_core},
    {"rollout.budget", luaopen_rollout_budget},
    {"rollout.alloc", luaopen_rollout_alloc},
    {"rollout.edit", luaopen_rollout_edit},
    {"rollout.codec", luaopen_rollout_codec},
    {NULL, NULL},
};

/* Benchmark-only modules (bench/c/bench_modules.c): defined only in ./rollout-bench, so
 * the reference is weak and NULL in the product binary. */
extern const rollout_module rollout_bench_modules[] __attribute__((weak));

static void preload_list(lua_State *L, const rollout_module *list) {
    for (const rollout_module *m = list; m && m->name; m++) {
        lua_pushcfunction(L, m->open);
        lua_setfield(L, -2, m->name);
    }
}

void modules_preload(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    preload_list(L, rollout_modules);
    preload_list(L, rollout_bench_modules);
    lua_pop(L, 1);
}
