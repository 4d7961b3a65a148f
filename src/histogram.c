/* histogram.c: the `histogram` namespace — bounded-error latency histograms and sliding
 * windows of them (the mechanism is described in histogram.h).
 *
 * Lua API (require("rollout.histogram")); values are seconds:
 *
 *   histogram.new() -> h
 *   h:record(v [, n])        v >= 0 finite, n >= 1 integer (default 1)
 *   h:record_many(list)      -> number recorded; every element must be a valid value
 *   h:merge(other) -> h      h:reset() -> h
 *   h:quantile(q)            q in [0, 1] -> seconds, or nil when empty (no data is never 0)
 *   h:count() -> integer     h:sum() -> number
 *   h:min(), h:max(), h:mean() -> seconds, or nil when empty
 *   tostring(h)              "histogram{count=.., p50=.., p99=.., max=..}"
 *
 *   histogram.window{slots = N, width = seconds} -> w      N in 1..4096
 *   w:record(now, v [, n])   -> true, or false when now is older than the ring
 *   w:quantile(now, q [, span]) -> seconds | nil    span defaults to the whole ring
 *   w:count(now [, span]) -> integer
 *   w:snapshot(now [, span]) -> a new histogram of that span
 *   w:reset()
 *
 *   histogram.BUCKETS, histogram.BYTES, histogram.MAX_RELATIVE_ERROR,
 *   histogram.MIN_VALUE, histogram.MAX_VALUE    (the exactly tracked range, seconds)
 *
 * Errors: wrong argument types, negative/NaN/infinite values, q outside [0, 1] and bad
 * window options are programming errors and raise. An empty histogram or span answers nil.
 */
#include "rollout/histogram.h"

#include <math.h>
#include <stdlib.h>

#include <lauxlib.h>

/* ---------------------------------------------------------------- C API */

void histogram_init(histogram *h) {
    memset(h, 0, sizeof *h);
    h->min = INFINITY;
    h->max = -INFINITY;
}

void histogram_reset(histogram *h) { histogram_init(h); }

histogram *histogram_new(void) {
    histogram *h = malloc(sizeof *h);
    if (h) histogram_init(h);
    return h;
}

void histogram_free(histogram *h) { free(h); }

void histogram_record_n(histogram *h, double v, uint64_t n) {
    if (n == 0) return;
    v = v > 0 ? v : 0;
    h->counts[histogram_bucket(v)] += n;
    h->count += n;
    h->sum += v * (double)n;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

void histogram_record_many(histogram *h, const double *v, size_t n) {
    for (size_t i = 0; i < n; i++) histogram_record(h, v[i]);
}

void histogram_merge(histogram *dst, const histogram *src) {
    if (!src->count) return;
    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++) dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
}

void histogram_bucket_bounds(size_t bucket, double *lo, double *hi) {
    if (bucket == 0) {
        *lo = 0;
        *hi = ldexp(1, HISTOGRAM_MIN_EXP);
        return;
    }
    if (bucket >= HISTOGRAM_BUCKETS - 1) {
        *lo = ldexp(1, HISTOGRAM_MAX_EXP);
        *hi = INFINITY;
        return;
    }
    size_t k = bucket - 1, sub = (size_t)1 << HISTOGRAM_SUB_BITS;
    int e = (int)(k >> HISTOGRAM_SUB_BITS) + HISTOGRAM_MIN_EXP;
    double m = (double)(k & (sub - 1));
    *lo = ldexp(1 + m / (double)sub, e);
    *hi = ldexp(1 + (m + 1) / (double)sub, e);
}

int histogram_quantile(const histogram *h, double q, double *out) {
    if (!h->count) return -1;
    q = q > 0 ? (q < 1 ? q : 1) : 0; /* NaN too */
    double r = ceil(q * (double)h->count);
    uint64_t rank = r < 1 ? 1 : (uint64_t)r, seen = 0;
    if (rank == 1 || rank >= h->count) return *out = rank == 1 ? h->min : h->max, 0;
    size_t i = 0;
    while (i < HISTOGRAM_BUCKETS - 1 && (seen += h->counts[i]) < rank) i++;
    double lo, hi;
    histogram_bucket_bounds(i, &lo, &hi);
    /* The exact min and max bound the bucket too, which sharpens the extreme buckets. */
    lo = lo > h->min ? lo : h->min;
    hi = hi < h->max ? hi : h->max;
    *out = lo + (hi - lo) / 2;
    return 0;
}

double histogram_mean(const histogram *h) { return h->count ? h->sum / (double)h->count : NAN; }

/* ---------------------------------------------------------------- windows */

struct histogram_window {
    size_t nslots;
    double width;
    int64_t newest;  /* the newest interval recorded */
    int64_t *epochs; /* interval number each slot holds */
    histogram *slots;
};

histogram_window *histogram_window_new(size_t nslots, double width) {
    if (nslots < 1 || nslots > HISTOGRAM_WINDOW_MAX_SLOTS || !(width > 0) || !isfinite(width)) return NULL;
    histogram_window *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->nslots = nslots;
    w->width = width;
    w->epochs = malloc(nslots * sizeof *w->epochs);
    w->slots = malloc(nslots * sizeof *w->slots);
    if (!w->epochs || !w->slots) {
        histogram_window_free(w);
        return NULL;
    }
    histogram_window_reset(w);
    return w;
}

void histogram_window_free(histogram_window *w) {
    if (!w) return;
    free(w->epochs);
    free(w->slots);
    free(w);
}

/* Slots are reset lazily, when an interval claims them; marking them unclaimed is enough. */
void histogram_window_reset(histogram_window *w) {
    for (size_t i = 0; i < w->nslots; i++) w->epochs[i] = INT64_MIN;
    w->newest = INT64_MIN;
}

/* The interval number of a time, clamped far inside int64 so that epoch +- nslots cannot
 * overflow (and NaN, which Lua never passes, lands at the top). */
static int64_t window_epoch(const histogram_window *w, double now) {
    double e = floor(now / w->width);
    if (!(e < 4e18)) return (int64_t)4e18;
    if (e < -4e18) return (int64_t)-4e18;
    return (int64_t)e;
}

static size_t window_pos(const histogram_window *w, int64_t epoch) {
    int64_t n = (int64_t)w->nslots, m = epoch % n;
    return (size_t)(m < 0 ? m + n : m);
}

int histogram_window_record(histogram_window *w, double now, double v, uint64_t n) {
    int64_t epoch = window_epoch(w, now);
    if (w->newest != INT64_MIN && epoch + (int64_t)w->nslots <= w->newest) return -1;
    if (epoch > w->newest) w->newest = epoch;
    size_t pos = window_pos(w, epoch);
    if (w->epochs[pos] != epoch) {
        histogram_init(&w->slots[pos]);
        w->epochs[pos] = epoch;
    }
    histogram_record_n(&w->slots[pos], v, n);
    return 0;
}

void histogram_window_collect(histogram_window *w, double now, double span, histogram *out) {
    histogram_init(out);
    int64_t cur = window_epoch(w, now);
    double want = ceil(span / w->width - 1e-9);
    int64_t n = want >= 1 ? (want <= (double)w->nslots ? (int64_t)want : (int64_t)w->nslots) : 1; /* NaN: 1 */
    for (int64_t k = cur - n + 1; k <= cur; k++) {
        size_t pos = window_pos(w, k);
        if (w->epochs[pos] == k) histogram_merge(out, &w->slots[pos]);
    }
}

size_t histogram_window_slots(const histogram_window *w) { return w->nslots; }
double histogram_window_width(const histogram_window *w) { return w->width; }

/* ---------------------------------------------------------------- Lua: histogram */

#define HISTOGRAM_MT "rollout.histogram.histogram"
#define WINDOW_MT "rollout.histogram.window"

/* The userdata holds a pointer, so C code (a probe, the simulator) that got the histogram
 * from histogram_push_new or histogram_check can record into it directly, for as long as
 * it keeps the Lua value referenced (a registry ref): __gc frees it. */
typedef struct {
    histogram *h;
} histogram_box;

histogram *histogram_check(lua_State *L, int idx) {
    histogram_box *b = luaL_checkudata(L, idx, HISTOGRAM_MT);
    if (!b->h) luaL_argerror(L, idx, "histogram already freed");
    return b->h;
}

histogram *histogram_push_new(lua_State *L) {
    histogram_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->h = NULL;
    luaL_setmetatable(L, HISTOGRAM_MT);
    if (!(b->h = histogram_new())) luaL_error(L, "histogram: out of memory");
    return b->h;
}

/* A finite value >= 0 at idx; raises otherwise. */
static double check_value(lua_State *L, int idx) {
    double v = luaL_checknumber(L, idx);
    if (!(v >= 0) || isinf(v)) luaL_argerror(L, idx, "value must be a finite number >= 0 (seconds)");
    return v;
}

static uint64_t check_repeat(lua_State *L, int idx) {
    lua_Integer n = luaL_optinteger(L, idx, 1);
    luaL_argcheck(L, n >= 1, idx, "count must be >= 1");
    return (uint64_t)n;
}

static double check_q(lua_State *L, int idx) {
    double q = luaL_checknumber(L, idx);
    luaL_argcheck(L, q >= 0 && q <= 1, idx, "quantile must be in [0, 1]");
    return q;
}

/* A number, or nil for "no data". [-0, +1, -] */
static int push_or_nil(lua_State *L, int have, double v) {
    if (have) lua_pushnumber(L, v);
    else lua_pushnil(L);
    return 1;
}

/* histogram.new() [-0, +1, m] */
static int l_histogram_new(lua_State *L) {
    histogram_push_new(L);
    return 1;
}

/* __gc [-0, +0, -] */
static int l_histogram_gc(lua_State *L) {
    histogram_box *b = luaL_checkudata(L, 1, HISTOGRAM_MT);
    histogram_free(b->h);
    b->h = NULL;
    return 0;
}

/* h:record(v [, n]) [-0, +0, v] */
static int l_histogram_record(lua_State *L) {
    histogram *h = histogram_check(L, 1);
    histogram_record_n(h, check_value(L, 2), check_repeat(L, 3));
    return 0;
}

/* h:record_many(list) -> n [-0, +1, v] */
static int l_histogram_record_many(lua_State *L) {
    histogram *h = histogram_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        int isnum;
        double v = (lua_rawgeti(L, 2, i), lua_tonumberx(L, -1, &isnum));
        lua_pop(L, 1);
        if (!isnum || !(v >= 0) || isinf(v))
            return luaL_error(L, "histogram:record_many: element %d is not a finite number >= 0", (int)i);
        histogram_record(h, v);
    }
    lua_pushinteger(L, n);
    return 1;
}

/* h:merge(other) -> h [-0, +1, v] */
static int l_histogram_merge(lua_State *L) {
    histogram *h = histogram_check(L, 1);
    histogram_merge(h, histogram_check(L, 2));
    lua_settop(L, 1);
    return 1;
}

/* h:reset() -> h [-0, +1, v] */
static int l_histogram_reset(lua_State *L) {
    histogram_reset(histogram_check(L, 1));
    lua_settop(L, 1);
    return 1;
}

/* h:quantile(q) -> seconds | nil [-0, +1, v] */
static int l_histogram_quantile(lua_State *L) {
    histogram *h = histogram_check(L, 1);
    double v = 0;
    int have = histogram_quantile(h, check_q(L, 2), &v) == 0;
    return push_or_nil(L, have, v);
}

/* h:count() [-0, +1, v] */
static int l_histogram_count(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)histogram_check(L, 1)->count);
    return 1;
}

/* h:sum() [-0, +1, v] */
static int l_histogram_sum(lua_State *L) {
    lua_pushnumber(L, histogram_check(L, 1)->sum);
    return 1;
}

/* h:min() [-0, +1, v] */
static int l_histogram_min(lua_State *L) {
    histogram *h = histogram_check(L, 1);
    return push_or_nil(L, h->count > 0, h->min);
}

/* h:max() [-0, +1, v] */
static int l_histogram_max(lua_State *L) {
    histogram *h = histogram_check(L, 1);
    return push_or_nil(L, h->count > 0, h->max);
}

/* h:mean() [-0, +1, v] */
static int l_histogram_mean(lua_State *L) {
    histogram *h = histogram_check(L, 1);
    return push_or_nil(L, h->count > 0, histogram_mean(h));
}

/* tostring(h) [-0, +1, m] */
static int l_histogram_tostring(lua_State *L) {
    histogram_box *b = luaL_checkudata(L, 1, HISTOGRAM_MT);
    double p50 = 0, p99 = 0;
    if (!b->h || !b->h->count) {
        lua_pushstring(L, "histogram{count=0}");
        return 1;
    }
    histogram_quantile(b->h, 0.5, &p50);
    histogram_quantile(b->h, 0.99, &p99);
    char buf[160];
    snprintf(buf, sizeof buf, "histogram{count=%llu, p50=%.6g, p99=%.6g, max=%.6g}", (unsigned long long)b->h->count,
             p50, p99, b->h->max);
    lua_pushstring(L, buf);
    return 1;
}

/* ---------------------------------------------------------------- Lua: window */

typedef struct {
    histogram_window *w;
    histogram *scratch; /* collect target for quantile/count: no allocation per query */
} window_box;

static window_box *check_window(lua_State *L, int idx) {
    window_box *b = luaL_checkudata(L, idx, WINDOW_MT);
    if (!b->w) luaL_argerror(L, idx, "window already freed");
    return b;
}

static double check_time(lua_State *L, int idx) {
    double now = luaL_checknumber(L, idx);
    luaL_argcheck(L, isfinite(now), idx, "time must be finite (seconds)");
    return now;
}

/* The optional span at idx, defaulting to the whole ring. */
static double check_span(lua_State *L, int idx, const histogram_window *w) {
    double whole = (double)histogram_window_slots(w) * histogram_window_width(w);
    double span = luaL_optnumber(L, idx, whole);
    luaL_argcheck(L, span > 0, idx, "span must be > 0 seconds");
    return span;
}

static lua_Number window_option(lua_State *L, const char *key) {
    int isnum;
    lua_getfield(L, 1, key);
    lua_Number v = lua_tonumberx(L, -1, &isnum);
    if (!isnum) luaL_error(L, "histogram.window: '%s' must be a number", key);
    lua_pop(L, 1);
    return v;
}

/* histogram.window{slots=N, width=seconds} [-0, +1, e] */
static int l_histogram_window(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "slots") != 0 && strcmp(k, "width") != 0)
            luaL_error(L, "histogram.window: unknown option '%s'", k);
    }
    lua_Number slots = window_option(L, "slots"), width = window_option(L, "width");
    if (slots != floor(slots) || slots < 1 || slots > HISTOGRAM_WINDOW_MAX_SLOTS)
        luaL_error(L, "histogram.window: 'slots' must be an integer in 1..%d", HISTOGRAM_WINDOW_MAX_SLOTS);
    if (!(width > 0) || !isfinite(width)) luaL_error(L, "histogram.window: 'width' must be > 0 seconds");
    window_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->w = NULL;
    b->scratch = NULL;
    luaL_setmetatable(L, WINDOW_MT);
    b->w = histogram_window_new((size_t)slots, width);
    b->scratch = histogram_new();
    if (!b->w || !b->scratch) luaL_error(L, "histogram.window: out of memory");
    return 1;
}

/* __gc [-0, +0, -] */
static int l_window_gc(lua_State *L) {
    window_box *b = luaL_checkudata(L, 1, WINDOW_MT);
    histogram_window_free(b->w);
    histogram_free(b->scratch);
    b->w = NULL;
    b->scratch = NULL;
    return 0;
}

/* w:record(now, v [, n]) -> boolean [-0, +1, v] */
static int l_window_record(lua_State *L) {
    window_box *b = check_window(L, 1);
    double now = check_time(L, 2), v = check_value(L, 3);
    lua_pushboolean(L, histogram_window_record(b->w, now, v, check_repeat(L, 4)) == 0);
    return 1;
}

/* w:quantile(now, q [, span]) -> seconds | nil [-0, +1, v] */
static int l_window_quantile(lua_State *L) {
    window_box *b = check_window(L, 1);
    double now = check_time(L, 2), q = check_q(L, 3), v = 0;
    histogram_window_collect(b->w, now, check_span(L, 4, b->w), b->scratch);
    int have = histogram_quantile(b->scratch, q, &v) == 0;
    return push_or_nil(L, have, v);
}

/* w:count(now [, span]) -> integer [-0, +1, v] */
static int l_window_count(lua_State *L) {
    window_box *b = check_window(L, 1);
    double now = check_time(L, 2);
    histogram_window_collect(b->w, now, check_span(L, 3, b->w), b->scratch);
    lua_pushinteger(L, (lua_Integer)b->scratch->count);
    return 1;
}

/* w:snapshot(now [, span]) -> histogram [-0, +1, m] */
static int l_window_snapshot(lua_State *L) {
    window_box *b = check_window(L, 1);
    double now = check_time(L, 2), span = check_span(L, 3, b->w);
    histogram_window_collect(b->w, now, span, histogram_push_new(L));
    return 1;
}

/* w:reset() [-0, +0, v] */
static int l_window_reset(lua_State *L) {
    histogram_window_reset(check_window(L, 1)->w);
    return 0;
}

/* ---------------------------------------------------------------- module */

static void new_metatable(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
    luaL_newmetatable(L, name);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
}

/* require("rollout.histogram") [-0, +1, e] */
int luaopen_rollout_histogram(lua_State *L) {
    static const luaL_Reg histogram_methods[] = {
        {"record", l_histogram_record},
        {"record_many", l_histogram_record_many},
        {"merge", l_histogram_merge},
        {"reset", l_histogram_reset},
        {"quantile", l_histogram_quantile},
        {"count", l_histogram_count},
        {"sum", l_histogram_sum},
        {"min", l_histogram_min},
        {"max", l_histogram_max},
        {"mean", l_histogram_mean},
        {NULL, NULL},
    };
    static const luaL_Reg window_methods[] = {
        {"record", l_window_record},     {"quantile", l_window_quantile}, {"count", l_window_count},
        {"snapshot", l_window_snapshot}, {"reset", l_window_reset},       {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {
        {"new", l_histogram_new},
        {"window", l_histogram_window},
        {NULL, NULL},
    };
    new_metatable(L, HISTOGRAM_MT, histogram_methods, l_histogram_gc);
    lua_pushcfunction(L, l_histogram_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    new_metatable(L, WINDOW_MT, window_methods, l_window_gc);
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_pushinteger(L, HISTOGRAM_BUCKETS);
    lua_setfield(L, -2, "BUCKETS");
    lua_pushinteger(L, (lua_Integer)sizeof(histogram));
    lua_setfield(L, -2, "BYTES");
    lua_pushnumber(L, HISTOGRAM_MAX_RELATIVE_ERROR);
    lua_setfield(L, -2, "MAX_RELATIVE_ERROR");
    lua_pushnumber(L, ldexp(1, HISTOGRAM_MIN_EXP));
    lua_setfield(L, -2, "MIN_VALUE");
    lua_pushnumber(L, ldexp(1, HISTOGRAM_MAX_EXP));
    lua_setfield(L, -2, "MAX_VALUE");
    return 1;
}
