/* rng.c: the `rng` namespace. Seeded randomness for the simulator's synthetic traffic,
 * reservoirs and generated scenarios (the Lua simulator itself is lua/rollout/sim/).
 *
 * Lua API:
 *   rng.new(seed) -> r                    xoshiro256** seeded through splitmix64
 *   r:uniform() -> [0, 1)                 r:normal() -> N(0, 1)
 *   r:poisson(lambda) -> integer          r:binomial(n, p) -> integer
 *   r:lognormal(h, n, mu, sigma)          record n log-normal values (seconds) into the
 *                                         histogram h, in C: the simulator's hot loop
 *   r:lognormal_sample(h, n, mu, sigma, k) -> list
 *                                         the same n draws recorded the same way (the
 *                                         stream is identical to r:lognormal), and also
 *                                         min(n, k) of them returned, evenly spaced in draw
 *                                         order: the draws are i.i.d., so that is a random
 *                                         sample without spending further random numbers
 * Same seed, same sequence, on every machine (no libc rand, no floating-point state).
 * Error policy: wrong arguments raise.
 */
#include "rollout/rng.h"

#include <math.h>

#include <lauxlib.h>

#include "rollout/histogram.h"

#define RNG_MT "rollout.rng.generator"

histogram *histogram_check(lua_State *L, int idx); /* src/histogram.c */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(rng_state *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void rng_seed(rng_state *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

double rng_uniform(rng_state *r) { return (double)(next_u64(r) >> 11) * 0x1.0p-53; }

/* Marsaglia's polar method, without caching the second value (keeps the stream simple). */
double rng_normal(rng_state *r) {
    double u, v, s;
    do {
        u = 2 * rng_uniform(r) - 1;
        v = 2 * rng_uniform(r) - 1;
        s = u * u + v * v;
    } while (s >= 1 || s == 0);
    return u * sqrt(-2 * log(s) / s);
}

/* Knuth's product method for small lambda, a rounded normal approximation beyond: the
 * simulator needs the right mean and spread, not exact tails at lambda > 50. */
uint64_t rng_poisson(rng_state *r, double lambda) {
    if (!(lambda > 0)) return 0;
    if (lambda < 50) {
        double l = exp(-lambda), p = 1;
        uint64_t k = 0;
        do {
            k++;
            p *= rng_uniform(r);
        } while (p > l);
        return k - 1;
    }
    double x = floor(lambda + sqrt(lambda) * rng_normal(r) + 0.5);
    return x < 0 ? 0 : x >= 9.2e18 ? (uint64_t)9.2e18 : (uint64_t)x;
}

uint64_t rng_binomial(rng_state *r, uint64_t n, double p) {
    if (n == 0 || !(p > 0)) return 0;
    if (p >= 1) return n;
    if (n < 64) {
        uint64_t k = 0;
        for (uint64_t i = 0; i < n; i++) k += rng_uniform(r) < p;
        return k;
    }
    double mean = (double)n * p;
    if (mean < 30) {
        uint64_t k = rng_poisson(r, mean);
        return k > n ? n : k;
    }
    double x = floor(mean + sqrt(mean * (1 - p)) * rng_normal(r) + 0.5);
    return x < 0 ? 0 : x > (double)n ? n : (uint64_t)x;
}

static rng_state *check_rng(lua_State *L) { return luaL_checkudata(L, 1, RNG_MT); }

/* rng.new(seed) -> r  [-0, +1, e] */
static int l_rng_new(lua_State *L) {
    lua_Integer seed = luaL_optinteger(L, 1, 1);
    rng_state *r = lua_newuserdatauv(L, sizeof *r, 0);
    rng_seed(r, (uint64_t)seed);
    luaL_setmetatable(L, RNG_MT);
    return 1;
}

/* r:uniform() -> [0, 1)  [-0, +1, e] */
static int l_generator_uniform(lua_State *L) { return lua_pushnumber(L, rng_uniform(check_rng(L))), 1; }
/* r:normal() -> N(0, 1)  [-0, +1, e] */
static int l_generator_normal(lua_State *L) { return lua_pushnumber(L, rng_normal(check_rng(L))), 1; }

/* r:poisson(lambda) -> integer  [-0, +1, e] */
static int l_generator_poisson(lua_State *L) {
    rng_state *r = check_rng(L);
    lua_pushinteger(L, (lua_Integer)rng_poisson(r, luaL_checknumber(L, 2)));
    return 1;
}

/* r:binomial(n, p) -> integer  [-0, +1, e] */
static int l_generator_binomial(lua_State *L) {
    rng_state *r = check_rng(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0, 2, "n must be >= 0");
    lua_pushinteger(L, (lua_Integer)rng_binomial(r, (uint64_t)n, luaL_checknumber(L, 3)));
    return 1;
}

/* r:lognormal(h, n, mu, sigma)  [-0, +0, e] */
static int l_generator_lognormal(lua_State *L) {
    rng_state *r = check_rng(L);
    histogram *h = histogram_check(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    double mu = luaL_checknumber(L, 4), sigma = luaL_checknumber(L, 5);
    luaL_argcheck(L, sigma >= 0, 5, "sigma must be >= 0");
    for (lua_Integer i = 0; i < n; i++) histogram_record(h, exp(mu + sigma * rng_normal(r)));
    return 0;
}

/* r:lognormal_sample(h, n, mu, sigma, k) -> list  [-0, +1, e] */
static int l_generator_lognormal_sample(lua_State *L) {
    rng_state *r = check_rng(L);
    histogram *h = histogram_check(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    double mu = luaL_checknumber(L, 4), sigma = luaL_checknumber(L, 5);
    lua_Integer k = luaL_checkinteger(L, 6);
    luaL_argcheck(L, sigma >= 0, 5, "sigma must be >= 0");
    luaL_argcheck(L, k >= 0, 6, "k must be >= 0");
    lua_Integer keep = n < k ? (n > 0 ? n : 0) : k;
    lua_createtable(L, (int)keep, 0);
    lua_Integer next = 0, kept = 0; /* the index of the next draw to keep */
    for (lua_Integer i = 0; i < n; i++) {
        double v = exp(mu + sigma * rng_normal(r));
        histogram_record(h, v);
        if (i == next && kept < keep) {
            lua_pushnumber(L, v);
            lua_rawseti(L, -2, ++kept);
            next = (lua_Integer)((double)kept * (double)n / (double)keep);
        }
    }
    return 1;
}

/* require("rollout.rng") [-0, +1, m] */
int luaopen_rollout_rng(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"uniform", l_generator_uniform},
        {"normal", l_generator_normal},
        {"poisson", l_generator_poisson},
        {"binomial", l_generator_binomial},
        {"lognormal", l_generator_lognormal},
        {"lognormal_sample", l_generator_lognormal_sample},
        {NULL, NULL},
    };
    luaL_newmetatable(L, RNG_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"new", l_rng_new}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
