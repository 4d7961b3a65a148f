/* stats.h: the `stats` namespace (src/stats.c) — the numbers the judge decides on.
 *
 * Mann-Whitney U test matching scipy.stats.mannwhitneyu as Debian 12 ships it (scipy
 * 1.10.1): same U (U1, the statistic of x), same p values for every alternative and
 * method, same 'auto' rule. Beside the test: the Hodges-Lehmann shift (median of all
 * pairwise differences y - x, i.e. canary minus baseline when x is the baseline) with an
 * order-statistics confidence interval, found by selection without materialising the
 * n1*n2 differences; the mean ratio mean(y)/mean(x); the common-language effect size
 * P(Y > X) + P(Y = X)/2. Plus mean, median, type-7 quantiles and IQR outlier removal.
 *
 * The Lua API and the error policy are described at the top of src/stats.c. The C API
 * below is pure C (no Lua state, no NaN in the inputs) so it can be reused and tested
 * apart from the bindings.
 */
#ifndef ROLLOUT_STATS_H
#define ROLLOUT_STATS_H

#include <stddef.h>
#include <lua.h>

enum stats_alternative { STATS_TWO_SIDED, STATS_LESS, STATS_GREATER };
enum stats_method { STATS_AUTO, STATS_EXACT, STATS_ASYMPTOTIC };

/* Return codes of stats_mann_whitney. */
enum stats_status { STATS_OK = 0, STATS_ENOMEM, STATS_ETOOBIG };

struct stats_mw_opts {
    enum stats_alternative alternative;
    enum stats_method method;
    int use_continuity; /* scipy's use_continuity; only the asymptotic method uses it */
    double confidence;  /* of the Hodges-Lehmann interval, in (0, 1) */
};

struct stats_mw_result {
    double u1, u2;              /* U of x (scipy's statistic) and of y; u1 + u2 = n1*n2 */
    double p;                   /* for opts.alternative */
    double p_less, p_greater;   /* both one-sided p values, same method */
    double z;                   /* (u1 - n1*n2/2) / sd, tie-corrected, no continuity */
    enum stats_method method;   /* the one used: never STATS_AUTO */
    double shift, ci_lo, ci_hi; /* Hodges-Lehmann estimate of y - x and its interval */
    double mean_ratio;          /* mean(y) / mean(x) */
    double cles;                /* P(Y > X) + P(Y = X) / 2 */
};

/* x[n1] and y[n2]: n1, n2 >= 1, no NaN (infinities are allowed). STATS_ETOOBIG when
 * opts->method is STATS_EXACT and the exact distribution would be too costly. */
enum stats_status stats_mann_whitney(const double *x, size_t n1, const double *y, size_t n2,
                                     const struct stats_mw_opts *opts, struct stats_mw_result *r);

/* Type-7 (numpy's default 'linear') quantile of sorted[n], n >= 1, q in [0, 1]. */
double stats_quantile_sorted(const double *sorted, size_t n, double q);

/* Sort doubles ascending (no NaN). */
void stats_sort(double *v, size_t n);

/* Registered by the host as require("rollout.stats"); returns the module table. */
int luaopen_rollout_stats(lua_State *L);

#endif
