/* histogram_bench.c: require("rollout.bench.histogram") — recording speed and quantile
 * error of the histogram of histogram.h, for `make bench` only (linked into
 * ./rollout-bench, never into the product binary).
 *
 *   record(n [, seed]) -> {record_many=, record=, log2_anchor=, bytes=,
 *       quantiles = {{q=, estimate=, exact=, error=}, ...}}
 *     Records n log-normal values (median 20 ms, sigma 1.2) in C and times only the
 *     recording, as {mean=, median=} ns per value (thread CPU time; the median over
 *     64 Ki-value chunks): record_many through histogram_record_many on each chunk,
 *     record through an inline histogram_record per value, log2_anchor the same loop
 *     bucketing with log2() instead of the bit trick, as an anchor from the same run.
 *     Exact quantiles come from a second, identical pass that keeps only the values of the
 *     bucket holding each rank.
 *
 * Errors: wrong arguments raise; out of memory raises.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "rollout/histogram.h"
#include "bench_modules.h"

#define BENCH_MT "rollout.bench.histogram.state"

/* xoshiro256**, seeded by splitmix64: fast and reproducible across runs. */
struct rng {
    uint64_t s[4];
};

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(struct rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return out;
}

static void rng_seed(struct rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

/* Uniform in (0, 1]. */
static double rng_unit(struct rng *r) { return ((double)(rng_next(r) >> 11) + 1) * 0x1.0p-53; }

#define BENCH_MEDIAN 0.020
#define BENCH_SIGMA 1.2
#define BENCH_CHUNK 65536
#define BENCH_NQ 4

/* n log-normal values (Box-Muller pairs), the last chunk possibly partial. */
static void bench_fill(struct rng *r, double *v, size_t n) {
    const double mu = log(BENCH_MEDIAN), two_pi = 6.283185307179586;
    for (size_t i = 0; i < n; i += 2) {
        double rad = sqrt(-2 * log(rng_unit(r))), a = two_pi * rng_unit(r);
        v[i] = exp(mu + BENCH_SIGMA * rad * cos(a));
        if (i + 1 < n) v[i + 1] = exp(mu + BENCH_SIGMA * rad * sin(a));
    }
}

/* This thread's CPU time: a busy neighbour on a shared machine does not inflate it. */
static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The naive alternative, for the in-run anchor: histogram_record with the bucket from
 * log2() instead of the double's bits. */
static void record_log2(histogram *h, const double *v, size_t n) {
    const double sub = (double)(1 << HISTOGRAM_SUB_BITS);
    for (size_t i = 0; i < n; i++) {
        double x = v[i] > 0 ? v[i] : 0, b = (log2(x) - HISTOGRAM_MIN_EXP) * sub + 1;
        b = b < 0 ? 0 : b > HISTOGRAM_BUCKETS - 1 ? HISTOGRAM_BUCKETS - 1 : b;
        h->counts[(size_t)b]++;
        h->count++;
        h->sum += x;
        h->min = x < h->min ? x : h->min;
        h->max = x > h->max ? x : h->max;
    }
}

struct exact_q {
    double q, estimate;
    size_t bucket;
    uint64_t rank_in_bucket; /* 1-based rank among the bucket's values */
    double *vals;
    size_t nvals;
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Where rank ceil(q n) falls: its bucket and its rank within the bucket. */
static void locate_rank(const histogram *h, struct exact_q *e) {
    double r = ceil(e->q * (double)h->count);
    uint64_t rank = r < 1 ? 1 : (uint64_t)r, before = 0;
    size_t i = 0;
    while (i < HISTOGRAM_BUCKETS - 1 && before + h->counts[i] < rank) before += h->counts[i++];
    e->bucket = i;
    e->rank_in_bucket = rank - before;
    histogram_quantile(h, e->q, &e->estimate);
}

/* Timings of the three loops: total, and per full chunk for the median. */
struct bench_timing {
    double total_ns;
    double *chunk_ns;
    size_t nchunks;
};

struct bench_state {
    histogram *h, *single, *anchor;
    double *chunk;
    struct bench_timing t[3]; /* record_many, record per call, log2 anchor */
    struct exact_q eq[BENCH_NQ];
};

/* __gc: all owned memory lives here, so a raise (out of memory) cannot leak it.  [-0, +0, -] */
static int l_bench_gc(lua_State *L) {
    struct bench_state *b = lua_touserdata(L, 1);
    histogram_free(b->h);
    histogram_free(b->single);
    histogram_free(b->anchor);
    free(b->chunk);
    for (int i = 0; i < 3; i++) free(b->t[i].chunk_ns);
    for (int i = 0; i < BENCH_NQ; i++) free(b->eq[i].vals);
    memset(b, 0, sizeof *b);
    return 0;
}

static void bench_time(struct bench_timing *t, double ns, size_t k) {
    t->total_ns += ns;
    if (k == BENCH_CHUNK) t->chunk_ns[t->nchunks++] = ns / BENCH_CHUNK;
}

/* Pass 1: record n values, timing only the recording, three ways (see bench_state.t). */
static void bench_pass1(struct bench_state *b, uint64_t n, uint64_t seed) {
    struct rng r;
    rng_seed(&r, seed);
    for (uint64_t done = 0; done < n; done += BENCH_CHUNK) {
        size_t k = n - done < BENCH_CHUNK ? (size_t)(n - done) : BENCH_CHUNK;
        bench_fill(&r, b->chunk, k);
        double t0 = now_ns();
        histogram_record_many(b->h, b->chunk, k);
        double t1 = now_ns();
        for (size_t i = 0; i < k; i++) histogram_record(b->single, b->chunk[i]);
        double t2 = now_ns();
        record_log2(b->anchor, b->chunk, k);
        double t3 = now_ns();
        bench_time(&b->t[0], t1 - t0, k);
        bench_time(&b->t[1], t2 - t1, k);
        bench_time(&b->t[2], t3 - t2, k);
    }
}

/* {mean=, median=} ns per value of one loop; the median of full chunks shrugs off the
 * bursts a shared machine adds, the mean does not. [-0, +1, m] */
static void push_timing(lua_State *L, struct bench_timing *t, uint64_t n) {
    lua_createtable(L, 0, 2);
    lua_pushnumber(L, t->total_ns / (double)n);
    lua_setfield(L, -2, "mean");
    qsort(t->chunk_ns, t->nchunks, sizeof *t->chunk_ns, cmp_double);
    lua_pushnumber(L, t->nchunks ? t->chunk_ns[t->nchunks / 2] : t->total_ns / (double)n);
    lua_setfield(L, -2, "median");
}

/* Pass 2: the same values again; keep those of each quantile's bucket. */
static int bench_pass2(struct bench_state *b, uint64_t n, uint64_t seed) {
    struct rng r;
    rng_seed(&r, seed);
    for (int j = 0; j < BENCH_NQ; j++) {
        struct exact_q *e = &b->eq[j];
        if (!(e->vals = malloc(b->h->counts[e->bucket] * sizeof *e->vals + 1))) return -1;
    }
    for (uint64_t done = 0; done < n; done += BENCH_CHUNK) {
        size_t k = n - done < BENCH_CHUNK ? (size_t)(n - done) : BENCH_CHUNK;
        bench_fill(&r, b->chunk, k);
        for (size_t i = 0; i < k; i++) {
            size_t bucket = histogram_bucket(b->chunk[i]);
            for (int j = 0; j < BENCH_NQ; j++)
                if (bucket == b->eq[j].bucket) b->eq[j].vals[b->eq[j].nvals++] = b->chunk[i];
        }
    }
    return 0;
}

/* record(n [, seed]) [-0, +1, e] */
static int l_bench_record(lua_State *L) {
    static const double qs[BENCH_NQ] = {0.5, 0.9, 0.99, 0.999};
    lua_Integer n = luaL_checkinteger(L, 1);
    uint64_t seed = (uint64_t)luaL_optinteger(L, 2, 42);
    luaL_argcheck(L, n >= 1, 1, "n must be >= 1");
    struct bench_state *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BENCH_MT);
    b->h = histogram_new();
    b->single = histogram_new();
    b->anchor = histogram_new();
    b->chunk = malloc(BENCH_CHUNK * sizeof *b->chunk);
    int ok = b->h && b->single && b->anchor && b->chunk;
    for (int i = 0; i < 3; i++) ok = ok && (b->t[i].chunk_ns = malloc(((size_t)n / BENCH_CHUNK + 1) * sizeof(double)));
    if (!ok) return luaL_error(L, "rollout.bench.histogram: out of memory");
    bench_pass1(b, (uint64_t)n, seed);
    for (int j = 0; j < BENCH_NQ; j++) {
        b->eq[j].q = qs[j];
        locate_rank(b->h, &b->eq[j]);
    }
    if (bench_pass2(b, (uint64_t)n, seed)) return luaL_error(L, "rollout.bench.histogram: out of memory");
    lua_createtable(L, 0, 4);
    push_timing(L, &b->t[0], (uint64_t)n);
    lua_setfield(L, -2, "record_many");
    push_timing(L, &b->t[1], (uint64_t)n);
    lua_setfield(L, -2, "record");
    push_timing(L, &b->t[2], (uint64_t)n);
    lua_setfield(L, -2, "log2_anchor");
    lua_pushinteger(L, (lua_Integer)sizeof(histogram));
    lua_setfield(L, -2, "bytes");
    lua_createtable(L, BENCH_NQ, 0);
    for (int j = 0; j < BENCH_NQ; j++) {
        struct exact_q *e = &b->eq[j];
        qsort(e->vals, e->nvals, sizeof *e->vals, cmp_double);
        double exact = e->vals[e->rank_in_bucket - 1];
        lua_createtable(L, 0, 4);
        lua_pushnumber(L, e->q);
        lua_setfield(L, -2, "q");
        lua_pushnumber(L, e->estimate);
        lua_setfield(L, -2, "estimate");
        lua_pushnumber(L, exact);
        lua_setfield(L, -2, "exact");
        lua_pushnumber(L, (e->estimate - exact) / exact);
        lua_setfield(L, -2, "error");
        lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, -2, "quantiles");
    return 1;
}

/* require("rollout.bench.histogram") [-0, +1, m] */
int luaopen_rollout_bench_histogram(lua_State *L) {
    static const luaL_Reg funcs[] = {{"record", l_bench_record}, {NULL, NULL}};
    luaL_newmetatable(L, BENCH_MT);
    lua_pushcfunction(L, l_bench_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
