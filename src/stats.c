/* stats.c: the `stats` namespace — Mann-Whitney U, Hodges-Lehmann, quantiles.
 *
 * Lua API (require("rollout.stats")):
 *
 *   stats.mann_whitney(x, y [, opts]) -> result | nil, "empty sample"
 *       x, y: sequences of numbers; x is the baseline, y the canary.
 *       opts: alternative = 'two-sided' | 'less' | 'greater'   (default 'two-sided')
 *             method      = 'auto' | 'exact' | 'asymptotic'    (default 'auto')
 *             use_continuity = boolean                         (default true)
 *             confidence  = number in (0, 1)                   (default 0.95)
 *             nan         = 'propagate' | 'omit' | 'raise'     (default 'propagate')
 *       result: u (U1, scipy's statistic: pairs with x > y, ties counting 1/2), u2,
 *               p (for opts.alternative), p_less, p_greater, z, n1, n2, method (used),
 *               alternative, shift (Hodges-Lehmann median of y - x), ci = {lo, hi},
 *               confidence, mean_ratio (mean(y)/mean(x)), cles (P(Y > X) + P(Y = X)/2).
 *       'less' means x is stochastically less than y (the canary is higher).
 *   stats.mean(t), stats.median(t)                -> number | nil, "empty sample"
 *   stats.quantile(t, q)                          -> number (q a number) or a sequence
 *                                                    (q a sequence) | nil, "empty sample"
 *   stats.iqr_filter(t [, k = 1.5])               -> copy, lo, hi | nil, "empty sample"
 *       copy keeps the values of t within [Q1 - k*IQR, Q3 + k*IQR], in their order.
 *
 * Matching scipy 1.10.1 (Debian 12), read in scipy/stats/_mannwhitneyu.py:
 *   - 'auto' is exact when min(n1, n2) <= 8 and the pooled sample has no ties, else
 *     asymptotic. (Here, also asymptotic when the exact table would be too large, which
 *     cannot happen below min(n1, n2) = 8 and n1*n2 = 5e7.)
 *   - exact p values ignore ties and truncate a half-integer U toward zero, as scipy's
 *     U.astype(int) does; p values are clipped to [0, 1].
 *   - asymptotic: tie-corrected sd, numerator U - n1*n2/2 - 0.5 with continuity, where
 *     U is U1 for 'greater', U2 for 'less' and max(U1, U2) (times 2) for 'two-sided'.
 *     All values equal gives sd = 0: p = 1 with continuity, NaN without (as scipy).
 *
 * Choices of ours (scipy has no Hodges-Lehmann):
 *   - shift estimates y - x (canary minus baseline): positive means the canary is higher.
 *   - ci: the k-th smallest and k-th largest difference, k = floor(n1*n2/2 - z*sd), z the
 *     normal quantile at (1 + confidence)/2 and sd the tie-corrected sd of U (Hollander &
 *     Wolfe's order-statistics interval, rounded down to stay conservative). When k < 1 the
 *     samples are too small for that confidence and ci = {-inf, inf}.
 *   - z is signed (positive: x tends higher) and without continuity correction, so it is
 *     the same whatever the alternative.
 *
 * NaN: mann_whitney follows opts.nan like scipy's nan_policy: 'propagate' returns a result
 * whose numbers are all NaN (n1, n2 count the NaNs), 'omit' drops NaNs before the test,
 * 'raise' raises. mean, median, quantile and iqr_filter always skip NaN (numpy's nan*
 * functions). Infinities are ordinary values; when both samples hold an infinity of the
 * same sign some differences are NaN and shift and ci are NaN.
 *
 * Errors: wrong types, unknown options and out-of-range options raise with the caller's
 * file:line and the offending key or index; so does method = 'exact' on samples too large
 * for its table. Degenerate data (a sample empty, or empty once NaNs are skipped) returns
 * nil, "empty sample".
 */
#include "rollout/stats.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bounds on the exact method's table (lower half of the U distribution) and work. */
#define EXACT_MAX_ENTRIES 25000000.0
#define EXACT_MAX_WORK 2e9
/* Hodges-Lehmann selection sorts the remaining candidates once they are this few. */
#define HL_GATHER_MIN 4096

/* ---------------------------------------------------------------- numeric helpers */

/* np.clip keeps NaN: comparisons with NaN are false, so it passes through. */
static double clip01(double p) {
    if (p > 1) return 1;
    if (p < 0) return 0;
    return p;
}

/* a / b with IEEE results for b == 0 spelled out, so no sanitizer sees a float division
 * by zero and the result matches numpy's (inf, -inf or NaN). */
static double ieee_div(double a, double b) {
    if (b != 0) return a / b;
    if (a > 0) return INFINITY;
    if (a < 0) return -INFINITY;
    return NAN;
}

static double norm_sf(double z) { return 0.5 * erfc(z / M_SQRT2); }

/* Acklam's rational approximation of the normal quantile, then one Halley step against
 * erfc: about 1e-15 relative, plenty for a rank index. p in (0, 1). */
static double norm_ppf(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                               1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01, -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double q, r, x;

    if (p < 0.02425 || p > 1 - 0.02425) {
        q = sqrt(-2 * log(p < 0.5 ? p : 1 - p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        if (p > 0.5) x = -x;
    } else {
        q = p - 0.5;
        r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    double e = 0.5 * erfc(-x / M_SQRT2) - p;
    double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

/* Long double accumulation: a plain double sum of 1e5 latencies loses digits numpy's
 * pairwise sum keeps, and infinities still come out as numpy's. */
static double mean_of(const double *v, size_t n) {
    long double s = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
    return (double)(s / (long double)n);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void stats_sort(double *v, size_t n) { qsort(v, n, sizeof *v, cmp_double); }

/* numpy's _lerp: from the nearer end, so q = 1 gives the maximum exactly. */
static double lerp(double a, double b, double t) {
    if (t == 0) return a;
    double diff = b - a;
    return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

double stats_quantile_sorted(const double *sorted, size_t n, double q) {
    double h = (double)(n - 1) * q;
    size_t lo = (size_t)floor(h);
    if (lo >= n - 1) return sorted[n - 1];
    return lerp(sorted[lo], sorted[lo + 1], h - (double)lo);
}

/* ---------------------------------------------------------------- ranks and U */

struct mw_ranks {
    double r1;       /* sum of x's mid-ranks in the pooled sample */
    double tie_term; /* sum over tie groups of t^3 - t */
    int has_ties;
};

/* Mid-ranks by merging the two sorted samples: each run of equal values is one tie group
 * shared by a values of x and b of y. Same sums as scipy's rankdata, without sorting the
 * pooled sample again. */
static struct mw_ranks mw_rank(const double *xs, size_t n1, const double *ys, size_t n2) {
    struct mw_ranks r = {0, 0, 0};
    size_t i = 0, j = 0, below = 0;

    while (i < n1 || j < n2) {
        double v = (j >= n2 || (i < n1 && xs[i] <= ys[j])) ? xs[i] : ys[j];
        size_t a = 0, b = 0;
        while (i < n1 && xs[i] == v) i++, a++;
        while (j < n2 && ys[j] == v) j++, b++;
        double t = (double)(a + b);
        r.r1 += (double)a * ((double)below + (t + 1) / 2);
        r.tie_term += t * t * t - t;
        r.has_ties |= a + b > 1;
        below += a + b;
    }
    return r;
}

/* Standard deviation of U under the null, with scipy's tie correction. */
static double mw_sd(size_t n1, size_t n2, double tie_term) {
    double n = (double)(n1 + n2);
    return sqrt((double)n1 * (double)n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))));
}

/* ---------------------------------------------------------------- exact distribution */

struct mw_exact {
    double *cdf; /* P(U <= k) for k = 0..half */
    size_t half; /* floor(n1*n2 / 2): the rest follows by symmetry */
    size_t mn;
};

static int mw_exact_too_big(size_t n1, size_t n2) {
    double mn = (double)n1 * (double)n2;
    double steps = (double)(n1 < n2 ? n1 : n2);
    return mn / 2 + 1 > EXACT_MAX_ENTRIES || steps * (mn / 2 + 1) > EXACT_MAX_WORK;
}

/* The null distribution of U is the Gaussian binomial [m+n choose m]_q / C(m+n, m). Build
 * it factor by factor, [n+i, i] = [n+i-1, i-1] (1 - q^(n+i)) / (1 - q^i) (Harding 1984):
 * dividing first keeps every intermediate positive, and rescaling by i/(n+i) keeps the
 * table a probability distribution, so nothing overflows where scipy's counts would. */
static void mw_exact_pmf(double *f, size_t half, size_t m, size_t n) {
    memset(f, 0, (half + 1) * sizeof *f);
    f[0] = 1;
    for (size_t i = 1; i <= m; i++) {
        for (size_t k = i; k <= half; k++) f[k] += f[k - i];
        for (size_t k = half; k >= n + i; k--) f[k] -= f[k - n - i];
        double scale = (double)i / (double)(n + i);
        for (size_t k = 0; k <= half; k++) f[k] = f[k] > 0 ? f[k] * scale : 0;
    }
}

static int mw_exact_init(struct mw_exact *e, size_t n1, size_t n2) {
    e->mn = n1 * n2;
    e->half = e->mn / 2;
    e->cdf = malloc((e->half + 1) * sizeof *e->cdf);
    if (!e->cdf) return -1;
    mw_exact_pmf(e->cdf, e->half, n1 < n2 ? n1 : n2, n1 < n2 ? n2 : n1);
    for (size_t k = 1; k <= e->half; k++) e->cdf[k] += e->cdf[k - 1];
    return 0;
}

/* P(U <= k), from the lower half; the upper half by P(U <= k) = 1 - P(U <= mn - k - 1). */
static double mw_exact_cdf(const struct mw_exact *e, size_t k) {
    if (k <= e->half) return e->cdf[k];
    if (k >= e->mn) return 1;
    return 1 - e->cdf[e->mn - k - 1];
}

/* scipy: sf(U) = cdf(mn - U) with U truncated to an integer (it includes P(U = u)). */
static double mw_exact_sf(const struct mw_exact *e, double u) { return mw_exact_cdf(e, e->mn - (size_t)u); }

/* ---------------------------------------------------------------- p values */

static double mw_asymptotic_sf(double u, double mu, double sd, int continuity) {
    double num = u - mu - (continuity ? 0.5 : 0);
    return norm_sf(ieee_div(num, sd));
}

static void mw_p_asymptotic(struct stats_mw_result *r, size_t n1, size_t n2, double sd, int continuity) {
    double mu = (double)n1 * (double)n2 / 2;
    r->p_greater = clip01(mw_asymptotic_sf(r->u1, mu, sd, continuity));
    r->p_less = clip01(mw_asymptotic_sf(r->u2, mu, sd, continuity));
    r->p = clip01(2 * mw_asymptotic_sf(fmax(r->u1, r->u2), mu, sd, continuity));
}

static int mw_p_exact(struct stats_mw_result *r, size_t n1, size_t n2) {
    struct mw_exact e;
    if (mw_exact_init(&e, n1, n2)) return -1;
    r->p_greater = clip01(mw_exact_sf(&e, r->u1));
    r->p_less = clip01(mw_exact_sf(&e, r->u2));
    r->p = clip01(2 * mw_exact_sf(&e, fmax(r->u1, r->u2)));
    free(e.cdf);
    return 0;
}

static enum stats_method mw_choose(enum stats_method asked, size_t n1, size_t n2, int ties) {
    if (asked != STATS_AUTO) return asked;
    if ((n1 > 8 && n2 > 8) || ties || mw_exact_too_big(n1, n2)) return STATS_ASYMPTOTIC;
    return STATS_EXACT;
}

/* ---------------------------------------------------------------- Hodges-Lehmann */

/* The n1*n2 differences y[j] - x[i] form a matrix whose rows rise with j and whose
 * columns fall with i (x and y sorted; rounded subtraction is monotone too). Selection
 * keeps, per row, a window [lo, hi) of candidates, splits on a random candidate and
 * counts the differences below it with one two-pointer sweep: O(n1 + n2) per round and
 * O(log(n1*n2)) expected rounds (Monahan's algorithm for the one-sample case). */
struct hl_matrix {
    const double *x, *y;
    size_t n1, n2;
    size_t *lo, *hi, *lt, *le;
    double *buf;
    size_t buf_len;
    uint64_t rng;
};

static uint64_t hl_random(struct hl_matrix *h) {
    /* splitmix64: a fixed seed keeps results reproducible run to run. */
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static double hl_pivot(struct hl_matrix *h, size_t left) {
    size_t r = (size_t)(hl_random(h) % left);
    for (size_t i = 0;; i++) {
        size_t w = h->hi[i] - h->lo[i];
        if (r < w) return h->y[h->lo[i] + r] - h->x[i];
        r -= w;
    }
}

/* Per row, how many differences are < p (lt) and <= p (le); both rise with i. */
static void hl_count(struct hl_matrix *h, double p, size_t *nlt, size_t *nle) {
    size_t j = 0, k = 0;
    *nlt = *nle = 0;
    for (size_t i = 0; i < h->n1; i++) {
        while (j < h->n2 && h->y[j] - h->x[i] < p) j++;
        while (k < h->n2 && h->y[k] - h->x[i] <= p) k++;
        h->lt[i] = j, h->le[i] = k;
        *nlt += j, *nle += k;
    }
}

/* The rank-th smallest remaining candidate, by sorting them all. */
static double hl_gather(struct hl_matrix *h, size_t rank) {
    size_t n = 0;
    for (size_t i = 0; i < h->n1; i++)
        for (size_t j = h->lo[i]; j < h->hi[i]; j++) h->buf[n++] = h->y[j] - h->x[i];
    stats_sort(h->buf, n);
    return h->buf[rank - 1];
}

/* The k-th smallest difference, k in 1..n1*n2. */
static double hl_select(struct hl_matrix *h, size_t k) {
    for (size_t i = 0; i < h->n1; i++) h->lo[i] = 0, h->hi[i] = h->n2;
    for (;;) {
        size_t left = 0, below = 0, nlt, nle;
        for (size_t i = 0; i < h->n1; i++) left += h->hi[i] - h->lo[i], below += h->lo[i];
        if (left <= h->buf_len) return hl_gather(h, k - below);
        double p = hl_pivot(h, left);
        hl_count(h, p, &nlt, &nle);
        if (k > nlt && k <= nle) return p;
        for (size_t i = 0; i < h->n1; i++) {
            if (k <= nlt && h->lt[i] < h->hi[i]) h->hi[i] = h->lt[i];
            if (k > nle && h->le[i] > h->lo[i]) h->lo[i] = h->le[i];
        }
    }
}

static int hl_init(struct hl_matrix *h, const double *xs, size_t n1, const double *ys, size_t n2) {
    h->x = xs, h->y = ys, h->n1 = n1, h->n2 = n2;
    h->rng = 0x726f6c6c6f7574u;
    h->buf_len = n1 + n2 > HL_GATHER_MIN ? n1 + n2 : HL_GATHER_MIN;
    h->lo = malloc(4 * n1 * sizeof *h->lo);
    h->buf = malloc(h->buf_len * sizeof *h->buf);
    if (!h->lo || !h->buf) {
        free(h->lo), free(h->buf);
        return -1;
    }
    h->hi = h->lo + n1, h->lt = h->hi + n1, h->le = h->lt + n1;
    return 0;
}

static void hl_free(struct hl_matrix *h) {
    free(h->lo);
    free(h->buf);
}

/* Infinities of the same sign in both samples make inf - inf = NaN differences, which
 * have no order to select from. */
static int hl_undefined(const double *xs, size_t n1, const double *ys, size_t n2) {
    return (isinf(xs[0]) && xs[0] == ys[0]) || (isinf(xs[n1 - 1]) && xs[n1 - 1] == ys[n2 - 1]);
}

static int mw_hodges_lehmann(struct stats_mw_result *r, const double *xs, size_t n1, const double *ys, size_t n2,
                             double sd, double confidence) {
    struct hl_matrix h;
    size_t n = n1 * n2;

    if (hl_undefined(xs, n1, ys, n2)) {
        r->shift = r->ci_lo = r->ci_hi = NAN;
        return 0;
    }
    if (hl_init(&h, xs, n1, ys, n2)) return -1;
    r->shift = n % 2 ? hl_select(&h, n / 2 + 1) : (hl_select(&h, n / 2) + hl_select(&h, n / 2 + 1)) / 2;
    double k = floor((double)n / 2 - norm_ppf((1 + confidence) / 2) * (sd > 0 ? sd : 0));
    if (k >= 1) {
        r->ci_lo = hl_select(&h, (size_t)k);
        r->ci_hi = hl_select(&h, n + 1 - (size_t)k);
    } else {
        r->ci_lo = -INFINITY, r->ci_hi = INFINITY;
    }
    hl_free(&h);
    return 0;
}

/* ---------------------------------------------------------------- the test */

static double *sorted_copy(const double *v, size_t n) {
    double *c = malloc(n * sizeof *c);
    if (c) {
        memcpy(c, v, n * sizeof *c);
        stats_sort(c, n);
    }
    return c;
}

static enum stats_status mw_on_sorted(const double *xs, size_t n1, const double *ys, size_t n2,
                                      const struct stats_mw_opts *o, struct stats_mw_result *r) {
    struct mw_ranks rk = mw_rank(xs, n1, ys, n2);
    double mn = (double)n1 * (double)n2;
    double sd = mw_sd(n1, n2, rk.tie_term);

    r->u1 = rk.r1 - (double)n1 * ((double)n1 + 1) / 2;
    r->u2 = mn - r->u1;
    r->z = ieee_div(r->u1 - mn / 2, sd);
    r->cles = r->u2 / mn;
    r->mean_ratio = ieee_div(mean_of(ys, n2), mean_of(xs, n1));
    r->method = mw_choose(o->method, n1, n2, rk.has_ties);
    if (r->method == STATS_EXACT && mw_exact_too_big(n1, n2)) return STATS_ETOOBIG;
    if (r->method == STATS_EXACT) {
        if (mw_p_exact(r, n1, n2)) return STATS_ENOMEM;
    } else {
        mw_p_asymptotic(r, n1, n2, sd, o->use_continuity);
    }
    if (o->alternative == STATS_LESS) r->p = r->p_less;
    else if (o->alternative == STATS_GREATER) r->p = r->p_greater;
    if (mw_hodges_lehmann(r, xs, n1, ys, n2, sd, o->confidence)) return STATS_ENOMEM;
    return STATS_OK;
}

enum stats_status stats_mann_whitney(const double *x, size_t n1, const double *y, size_t n2,
                                     const struct stats_mw_opts *o, struct stats_mw_result *r) {
    if (n2 != 0 && n1 > SIZE_MAX / n2) return STATS_ETOOBIG;
    double *xs = sorted_copy(x, n1), *ys = sorted_copy(y, n2);
    enum stats_status st = xs && ys ? mw_on_sorted(xs, n1, ys, n2, o, r) : STATS_ENOMEM;
    free(xs);
    free(ys);
    return st;
}

/* ---------------------------------------------------------------- Lua: samples */

enum nan_policy { NAN_PROPAGATE, NAN_OMIT, NAN_RAISE };

struct sample {
    double *v;
    size_t n;     /* values kept */
    size_t n_nan; /* NaNs seen (kept under NAN_PROPAGATE, else dropped) */
};

/* Reads the sequence at arg into a userdata buffer left on the stack, so an error raised
 * halfway (a string in the table) frees it with the rest of the frame. [-0, +1, e] */
static struct sample sample_read(lua_State *L, int arg, const char *fn, const char *name, enum nan_policy nan) {
    struct sample s = {NULL, 0, 0};
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Unsigned len = lua_rawlen(L, arg);
    s.v = lua_newuserdatauv(L, (len ? len : 1) * sizeof *s.v, 0);
    for (lua_Unsigned i = 1; i <= len; i++) {
        if (lua_rawgeti(L, arg, (lua_Integer)i) != LUA_TNUMBER)
            luaL_error(L, "%s: %s[%d] is a %s, expected a number", fn, name, (int)i, luaL_typename(L, -1));
        double v = lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (isnan(v) && nan == NAN_RAISE) luaL_error(L, "%s: %s[%d] is NaN (opts.nan = 'raise')", fn, name, (int)i);
        s.n_nan += isnan(v) != 0;
        if (!isnan(v) || nan == NAN_PROPAGATE) s.v[s.n++] = v;
    }
    return s;
}

/* A sorted copy of the non-NaN values at arg, left on the stack. [-0, +1, e] */
static struct sample sample_read_sorted(lua_State *L, int arg, const char *fn) {
    struct sample s = sample_read(L, arg, fn, "t", NAN_OMIT);
    stats_sort(s.v, s.n);
    return s;
}

/* nil, "empty sample": what every function returns given no data  [-0, +2, m] */
static int push_empty(lua_State *L) {
    lua_pushnil(L);
    lua_pushliteral(L, "empty sample");
    return 2;
}

/* ---------------------------------------------------------------- Lua: options */

static const char *const alternative_names[] = {"two-sided", "less", "greater", NULL};
static const char *const method_names[] = {"auto", "exact", "asymptotic", NULL};
static const char *const nan_names[] = {"propagate", "omit", "raise", NULL};

/* Index of the string on top in names, or an error naming opts.key. [-0, +0, e] */
static int opt_enum(lua_State *L, const char *key, const char *const names[]) {
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    for (int i = 0; v && names[i]; i++)
        if (strcmp(v, names[i]) == 0) return i;
    return luaL_error(L, "stats.mann_whitney: opts.%s must be '%s', '%s' or '%s', got %s%s%s", key, names[0], names[1],
                      names[2], v ? "'" : "a ", v ? v : luaL_typename(L, -1), v ? "'" : "");
}

struct mw_lua_opts {
    struct stats_mw_opts mw;
    enum nan_policy nan;
};

/* One key/value pair of opts (key at -2, value at -1). [-0, +0, e] */
static void mw_opt(lua_State *L, struct mw_lua_opts *o) {
    if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "stats.mann_whitney: opts has a %s key, expected option names", luaL_typename(L, -2));
    const char *key = lua_tostring(L, -2);
    if (strcmp(key, "alternative") == 0) {
        o->mw.alternative = (enum stats_alternative)opt_enum(L, key, alternative_names);
    } else if (strcmp(key, "method") == 0) {
        o->mw.method = (enum stats_method)opt_enum(L, key, method_names);
    } else if (strcmp(key, "nan") == 0) {
        o->nan = (enum nan_policy)opt_enum(L, key, nan_names);
    } else if (strcmp(key, "use_continuity") == 0) {
        if (!lua_isboolean(L, -1)) luaL_error(L, "stats.mann_whitney: opts.use_continuity must be a boolean");
        o->mw.use_continuity = lua_toboolean(L, -1);
    } else if (strcmp(key, "confidence") == 0) {
        double c = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
        if (!(c > 0 && c < 1)) luaL_error(L, "stats.mann_whitney: opts.confidence must be a number in (0, 1)");
        o->mw.confidence = c;
    } else {
        luaL_error(L, "stats.mann_whitney: unknown option opts.%s", key);
    }
}

/* Defaults, overridden by the table at arg if there is one. [-0, +0, e] */
static struct mw_lua_opts mw_read_opts(lua_State *L, int arg) {
    struct mw_lua_opts o = {{STATS_TWO_SIDED, STATS_AUTO, 1, 0.95}, NAN_PROPAGATE};
    if (lua_isnoneornil(L, arg)) return o;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        mw_opt(L, &o);
        lua_pop(L, 1);
    }
    return o;
}

/* ---------------------------------------------------------------- Lua: results */

/* Fields of the table on top. [-0, +0, m] */
static void set_number(lua_State *L, const char *key, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

static void set_integer(lua_State *L, const char *key, size_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, key);
}

static void set_string(lua_State *L, const char *key, const char *v) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

/* The result table. [-0, +1, m] */
static void mw_push_result(lua_State *L, const struct stats_mw_result *r, size_t n1, size_t n2,
                           const struct stats_mw_opts *o) {
    lua_createtable(L, 0, 16);
    set_number(L, "u", r->u1);
    set_number(L, "u2", r->u2);
    set_number(L, "p", r->p);
    set_number(L, "p_less", r->p_less);
    set_number(L, "p_greater", r->p_greater);
    set_number(L, "z", r->z);
    set_integer(L, "n1", n1);
    set_integer(L, "n2", n2);
    set_string(L, "method", method_names[r->method]);
    set_string(L, "alternative", alternative_names[o->alternative]);
    set_number(L, "shift", r->shift);
    lua_createtable(L, 2, 0);
    lua_pushnumber(L, r->ci_lo);
    lua_rawseti(L, -2, 1);
    lua_pushnumber(L, r->ci_hi);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, -2, "ci");
    set_number(L, "confidence", o->confidence);
    set_number(L, "mean_ratio", r->mean_ratio);
    set_number(L, "cles", r->cles);
}

/* scipy's nan_policy='propagate': every statistic NaN; the method stays as asked. */
static struct stats_mw_result mw_nan_result(enum stats_method asked) {
    struct stats_mw_result r = {NAN, NAN, NAN, NAN, NAN, NAN, asked, NAN, NAN, NAN, NAN, NAN};
    return r;
}

/* ---------------------------------------------------------------- Lua: functions */

/* stats.mann_whitney(x, y [, opts]) -> result | nil, "empty sample". [-0, +1|2, e] */
static int l_stats_mann_whitney(lua_State *L) {
    const char *fn = "stats.mann_whitney";
    struct mw_lua_opts o = mw_read_opts(L, 3);
    struct sample x = sample_read(L, 1, fn, "x", o.nan);
    struct sample y = sample_read(L, 2, fn, "y", o.nan);
    struct stats_mw_result r;

    if (x.n == 0 || y.n == 0) return push_empty(L);
    if (x.n_nan + y.n_nan > 0 && o.nan == NAN_PROPAGATE) {
        r = mw_nan_result(o.mw.method);
        mw_push_result(L, &r, x.n, y.n, &o.mw);
        return 1;
    }
    enum stats_status st = stats_mann_whitney(x.v, x.n, y.v, y.n, &o.mw, &r);
    if (st == STATS_ETOOBIG)
        return luaL_error(L,
                          "%s: method 'exact' is too costly for n1 = %d, n2 = %d; "
                          "use 'asymptotic' or 'auto'",
                          fn, (int)x.n, (int)y.n);
    if (st == STATS_ENOMEM) return luaL_error(L, "%s: out of memory", fn);
    mw_push_result(L, &r, x.n, y.n, &o.mw);
    return 1;
}

/* stats.mean(t) -> number | nil, "empty sample". [-0, +1|2, e] */
static int l_stats_mean(lua_State *L) {
    struct sample s = sample_read(L, 1, "stats.mean", "t", NAN_OMIT);
    if (s.n == 0) return push_empty(L);
    lua_pushnumber(L, mean_of(s.v, s.n));
    return 1;
}

/* stats.median(t) -> number | nil, "empty sample". [-0, +1|2, e] */
static int l_stats_median(lua_State *L) {
    struct sample s = sample_read_sorted(L, 1, "stats.median");
    if (s.n == 0) return push_empty(L);
    lua_pushnumber(L, stats_quantile_sorted(s.v, s.n, 0.5));
    return 1;
}

/* The probability at idx, checked. [-0, +0, e] */
static double quantile_q(lua_State *L, int idx) {
    double q = lua_type(L, idx) == LUA_TNUMBER ? lua_tonumber(L, idx) : NAN;
    if (!(q >= 0 && q <= 1)) luaL_error(L, "stats.quantile: q must be a number in [0, 1] or a sequence of them");
    return q;
}

/* stats.quantile(t, q) -> number | {numbers} | nil, "empty sample". [-0, +1|2, e] */
static int l_stats_quantile(lua_State *L) {
    int many = lua_type(L, 2) == LUA_TTABLE;
    if (!many) quantile_q(L, 2);
    struct sample s = sample_read_sorted(L, 1, "stats.quantile");
    if (s.n == 0) return push_empty(L);
    if (!many) {
        lua_pushnumber(L, stats_quantile_sorted(s.v, s.n, quantile_q(L, 2)));
        return 1;
    }
    lua_Integer nq = (lua_Integer)lua_rawlen(L, 2);
    lua_createtable(L, (int)nq, 0);
    for (lua_Integer i = 1; i <= nq; i++) {
        lua_rawgeti(L, 2, i);
        double q = quantile_q(L, -1);
        lua_pop(L, 1);
        lua_pushnumber(L, stats_quantile_sorted(s.v, s.n, q));
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* Copy the values of t within [lo, hi] into a new table; the original values, so
 * integers stay integers. NaN fails both comparisons and is dropped. [-0, +1, m] */
static void push_within(lua_State *L, int arg, double lo, double hi) {
    lua_Integer len = (lua_Integer)lua_rawlen(L, arg), n = 0;
    lua_createtable(L, (int)len, 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, arg, i);
        double v = lua_tonumber(L, -1);
        if (v >= lo && v <= hi) lua_rawseti(L, -2, ++n);
        else lua_pop(L, 1);
    }
}

/* stats.iqr_filter(t [, k = 1.5]) -> copy, lo, hi | nil, "empty sample". [-0, +2|3, e] */
static int l_stats_iqr_filter(lua_State *L) {
    double k = luaL_optnumber(L, 2, 1.5);
    if (!(k >= 0)) return luaL_error(L, "stats.iqr_filter: k must be a number >= 0");
    struct sample s = sample_read_sorted(L, 1, "stats.iqr_filter");
    if (s.n == 0) return push_empty(L);
    double q1 = stats_quantile_sorted(s.v, s.n, 0.25);
    double q3 = stats_quantile_sorted(s.v, s.n, 0.75);
    double lo = q1 - k * (q3 - q1), hi = q3 + k * (q3 - q1);
    push_within(L, 1, lo, hi);
    lua_pushnumber(L, lo);
    lua_pushnumber(L, hi);
    return 3;
}

static const luaL_Reg stats_functions[] = {
    {"mann_whitney", l_stats_mann_whitney},
    {"mean", l_stats_mean},
    {"median", l_stats_median},
    {"quantile", l_stats_quantile},
    {"iqr_filter", l_stats_iqr_filter},
    {NULL, NULL},
};

/* require("rollout.stats"). [-0, +1, m] */
int luaopen_rollout_stats(lua_State *L) {
    luaL_newlib(L, stats_functions);
    return 1;
}
