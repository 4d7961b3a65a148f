/* bench_modules.c: the registration list of the benchmark-only C modules. Linking this file
 * into a binary (./rollout-bench) makes src/modules.c preload them as well; the product
 * binary does not link it and has none of them. */
#include "rollout/modules.h"

#include "bench_modules.h"

const rollout_module rollout_bench_modules[] = {
    {"rollout.bench.promtext", luaopen_rollout_bench_promtext},
    {"rollout.bench.histogram", luaopen_rollout_bench_histogram},
    {NULL, NULL},
};
