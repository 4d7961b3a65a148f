/* promtext_bench.c: require("rollout.bench.promtext") — the Prometheus text parser timed
 * without Lua values, for `make bench` only (linked into ./rollout-bench, never into the
 * product binary).
 *
 *   walk(text [, iterations]) -> {cpu=, wall=, samples=, families=}
 *                                               | nil, "line N: message"
 *     Walks the text `iterations` times (default 1) through the C callbacks, touching every
 *     label, without building Lua values. cpu is this thread's CPU time and wall the
 *     monotonic time of all iterations, in seconds; samples and families are per walk.
 *
 * Errors: malformed text returns nil, "line N: message"; wrong argument types raise.
 */
#include <time.h>

#include <lauxlib.h>

#include "rollout/promtext.h"
#include "bench_modules.h"

struct walk {
    size_t nfamilies, nsamples, bytes;
};

static int walk_family(void *ud, const promtext_family *f) {
    struct walk *w = ud;
    w->nfamilies++;
    w->bytes += f->name.len + f->help.len;
    return 0;
}

/* Touch every label, as a consumer would, so the walk is not cheaper than real use. */
static int walk_sample(void *ud, const promtext_sample *s) {
    struct walk *w = ud;
    w->nsamples++;
    size_t bytes = s->name.len;
    for (size_t i = 0; i < s->nlabels; i++) bytes += s->labels[i].name.len + s->labels[i].value.len;
    w->bytes += bytes + (s->value != s->value);
    return 0;
}

static double clock_seconds(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* walk(text [, iterations]) [-0, +1|2, e] */
static int l_bench_walk(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_Integer iterations = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, iterations >= 1, 2, "iterations must be >= 1");
    promtext_parser parser;
    promtext_parser_init(&parser);
    struct walk w = {0};
    promtext_handler h = {walk_family, walk_sample, &w};
    promtext_error err;
    double cpu0 = clock_seconds(CLOCK_THREAD_CPUTIME_ID), wall0 = clock_seconds(CLOCK_MONOTONIC);
    int rc = PROMTEXT_OK;
    for (lua_Integer i = 0; i < iterations && rc == PROMTEXT_OK; i++) {
        w.nfamilies = w.nsamples = 0;
        rc = promtext_parse(&parser, text, len, &h, &err);
    }
    promtext_parser_free(&parser);
    if (rc != PROMTEXT_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "line %I: %s", (lua_Integer)err.line, err.message);
        return 2;
    }
    double cpu = clock_seconds(CLOCK_THREAD_CPUTIME_ID) - cpu0, wall = clock_seconds(CLOCK_MONOTONIC) - wall0;
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, cpu);
    lua_setfield(L, -2, "cpu");
    lua_pushnumber(L, wall);
    lua_setfield(L, -2, "wall");
    lua_pushinteger(L, (lua_Integer)w.nsamples);
    lua_setfield(L, -2, "samples");
    lua_pushinteger(L, (lua_Integer)w.nfamilies);
    lua_setfield(L, -2, "families");
    return 1;
}

/* require("rollout.bench.promtext") [-0, +1, m] */
int luaopen_rollout_bench_promtext(lua_State *L) {
    static const luaL_Reg funcs[] = {{"walk", l_bench_walk}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
