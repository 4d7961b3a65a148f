/* bench_modules.h: the C modules only ./rollout-bench has (`make bench`). They are
 * preloaded next to the product's modules (src/modules.c) through the weak
 * rollout_bench_modules list that bench/c/bench_modules.c defines. */
#ifndef ROLLOUT_BENCH_MODULES_H
#define ROLLOUT_BENCH_MODULES_H

#include <lua.h>

int luaopen_rollout_bench_promtext(lua_State *L);  /* require("rollout.bench.promtext") */
int luaopen_rollout_bench_histogram(lua_State *L); /* require("rollout.bench.histogram") */

#endif
