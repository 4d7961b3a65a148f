/* sim.h: the `sim` namespace: a seeded random source for synthetic traffic (xoshiro256**),
 * fast enough to simulate millions of requests per second of wall time. */
#ifndef ROLLOUT_SIM_H
#define ROLLOUT_SIM_H

#include <stdint.h>

#include <lua.h>

typedef struct {
    uint64_t s[4];
} sim_rng;

void sim_rng_seed(sim_rng *r, uint64_t seed);
double sim_uniform(sim_rng *r);           /* [0, 1) */
double sim_normal(sim_rng *r);            /* standard normal */
uint64_t sim_poisson(sim_rng *r, double lambda);
uint64_t sim_binomial(sim_rng *r, uint64_t n, double p);

int luaopen_rollout_sim(lua_State *L);

#endif
