/* rng.h: the `rng` namespace: a seeded random source for synthetic traffic (xoshiro256**),
 * fast enough to simulate millions of requests per second of wall time. */
#ifndef ROLLOUT_RNG_H
#define ROLLOUT_RNG_H

#include <stdint.h>

#include <lua.h>

typedef struct {
    uint64_t s[4];
} rng_state;

void rng_seed(rng_state *r, uint64_t seed);
double rng_uniform(rng_state *r); /* [0, 1) */
double rng_normal(rng_state *r);  /* standard normal */
uint64_t rng_poisson(rng_state *r, double lambda);
uint64_t rng_binomial(rng_state *r, uint64_t n, double p);

int luaopen_rollout_rng(lua_State *L);

#endif
