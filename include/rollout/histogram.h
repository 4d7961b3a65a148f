/* histogram.h: latency histograms with bounded relative error, and sliding windows of them.
 *
 * Log-linear buckets in the style of HdrHistogram, over seconds as doubles: each power of
 * two from 2^-24 s (60 ns) to 2^16 s (18.2 h) is cut into 128 equal sub-buckets, so a
 * bucket is at most 1/128 of its lower bound wide. The bucket of a value is read straight
 * off the double's bits (exponent and the top 7 mantissa bits: one shift, one subtract,
 * a clamp), with no log(). A quantile is the midpoint of the bucket holding its rank,
 * clamped to the exact min and max, so its relative error is at most 1/256 (0.39 %)
 * inside that range. Values below it share an underflow bucket, values above an
 * overflow bucket (still counted, in min, max and mean, but with coarser quantiles).
 * Fixed memory: HISTOGRAM_BUCKETS 64-bit counters (about 41 KB) per histogram.
 *
 * Quantile q of n values is the value of rank max(1, ceil(q * n)) in sorted order, the
 * nearest-rank definition, so p0 is the min and p100 the max.
 *
 * A window is a ring of `slots` histograms, each covering `width` seconds of the caller's
 * clock; a slot is reused (reset) when its interval comes round again, so "p99 over the
 * last 60 s" merges at most 60 slots and old data expires without any timer.
 *
 * Error policy (C): negative and NaN values are recorded as 0 (see histogram_record);
 * empty histograms answer -1 / NAN rather than a made-up 0. The Lua bindings
 * (src/histogram.c) raise on such values and other wrong arguments, and return nil for
 * "no data".
 */
#ifndef ROLLOUT_HISTOGRAM_H
#define ROLLOUT_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lua.h>

#define HISTOGRAM_SUB_BITS 7    /* 128 sub-buckets per power of 2 */
#define HISTOGRAM_MIN_EXP (-24) /* lowest tracked: 2^-24 s */
#define HISTOGRAM_MAX_EXP 16    /* overflow from 2^16 s */
#define HISTOGRAM_BUCKETS ((((HISTOGRAM_MAX_EXP) - (HISTOGRAM_MIN_EXP)) << HISTOGRAM_SUB_BITS) + 2)
#define HISTOGRAM_MAX_RELATIVE_ERROR (1.0 / (2 << HISTOGRAM_SUB_BITS))

typedef struct histogram {
    uint64_t count;
    double sum, min, max; /* min = +Inf, max = -Inf while empty */
    uint64_t counts[HISTOGRAM_BUCKETS];
} histogram;

/* Bucket of a value >= 0: 0 underflow, 1 .. BUCKETS-2 tracked, BUCKETS-1 overflow. */
static inline size_t histogram_bucket(double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    const int64_t base = (int64_t)(1023 + HISTOGRAM_MIN_EXP) << HISTOGRAM_SUB_BITS;
    int64_t i = (int64_t)(bits >> (52 - HISTOGRAM_SUB_BITS)) - base + 1;
    i = i < 0 ? 0 : i;
    i = i > HISTOGRAM_BUCKETS - 1 ? HISTOGRAM_BUCKETS - 1 : i;
    return (size_t)i;
}

/* Record one value in seconds. Negative values and NaN are recorded as 0 (a duration
 * measured across a clock step is still a request); pass finite values. Branch-free on
 * purpose: with no branch, a compiler keeps count, sum, min and max in registers across a
 * loop of calls (1.6 ns per value instead of 4.5). */
static inline void histogram_record(histogram *h, double v) {
    v = v > 0 ? v : 0;
    h->counts[histogram_bucket(v)]++;
    h->count++;
    h->sum += v;
    h->min = v < h->min ? v : h->min;
    h->max = v > h->max ? v : h->max;
}

void histogram_init(histogram *h); /* empty; same as reset */
histogram *histogram_new(void);    /* NULL when out of memory */
void histogram_free(histogram *h);
void histogram_record_n(histogram *h, double v, uint64_t n);
void histogram_record_many(histogram *h, const double *v, size_t n);
void histogram_merge(histogram *dst, const histogram *src);
void histogram_reset(histogram *h);
/* 0 and *out set, or -1 when empty. q is clamped to [0, 1]. */
int histogram_quantile(const histogram *h, double q, double *out);
static inline uint64_t histogram_count(const histogram *h) { return h->count; }
double histogram_mean(const histogram *h); /* NAN when empty */
/* Lower and upper bound of a bucket, in seconds. */
void histogram_bucket_bounds(size_t bucket, double *lo, double *hi);

typedef struct histogram_window histogram_window;

/* slots in 1 .. HISTOGRAM_WINDOW_MAX_SLOTS, width > 0 seconds; NULL when invalid or out of memory. */
#define HISTOGRAM_WINDOW_MAX_SLOTS 4096
histogram_window *histogram_window_new(size_t slots, double width);
void histogram_window_free(histogram_window *w);
void histogram_window_reset(histogram_window *w);
/* Record v at time now (seconds). Returns 0, or -1 when now is older than the ring. */
int histogram_window_record(histogram_window *w, double now, double v, uint64_t n);
/* Reset out, then merge the slots covering the last `span` seconds before now, rounded up
 * to whole slots (the current, partial slot included; at most the whole ring). */
void histogram_window_collect(histogram_window *w, double now, double span, histogram *out);
size_t histogram_window_slots(const histogram_window *w);
double histogram_window_width(const histogram_window *w);

/* For other C bindings: the histogram of a Lua value (raises unless it is one), and a new
 * Lua histogram whose C histogram the caller may record into directly. */
histogram *histogram_check(lua_State *L, int idx); /* [-0, +0, v] */
histogram *histogram_push_new(lua_State *L);       /* [-0, +1, m] */

/* Registered by the host as require("rollout.histogram"); returns the module table. */
int luaopen_rollout_histogram(lua_State *L);

#endif
