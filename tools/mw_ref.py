#!/usr/bin/python3
"""mw_ref.py: reference values for src/stats.c, computed with Debian's scipy/numpy.

Reads JSON on stdin: a list of cases, or {"cases": [...]}. A number in a sample may be
written as the string "nan", "inf" or "-inf".

  {"kind": "mw", "x": [...], "y": [...],              # Mann-Whitney, x baseline
   "alternative": "two-sided", "method": "auto",      # optional, scipy's defaults
   "use_continuity": true, "confidence": 0.95,
   "nan_policy": "propagate"}
  {"kind": "describe", "x": [...], "q": [...], "k": 1.5}   # mean, median, quantiles, IQR

Writes the results, one per case in order, as JSON ({"results": [...]}, non-finite
numbers as the strings "nan", "inf", "-inf"), or with --lines as text a Lua spec can read
without a JSON library: one line per value, "<case number from 1> <key> <value>...".

mw results: u, u2, p, p_less, p_greater (scipy.stats.mannwhitneyu, one call per
alternative), method (scipy's 'auto' rule), n1, n2, z (signed, tie-corrected, no
continuity), shift, ci_lo, ci_hi (brute force over all pairwise differences y - x, with the
rank rule documented in src/stats.c), mean_ratio, cles. Run it with /usr/bin/python3: the
scipy it must agree with is Debian's python3-scipy.
"""
import json
import math
import sys

import numpy as np
import scipy
from scipy import stats
from scipy.stats import _mannwhitneyu


def sample(values):
    # float() also reads the strings "nan", "inf" and "-inf".
    return np.array([float(v) for v in values], dtype=float)


def mw_case(case):
    x, y = sample(case["x"]), sample(case["y"])
    kw = dict(use_continuity=case.get("use_continuity", True),
              method=case.get("method", "auto"),
              nan_policy=case.get("nan_policy", "propagate"))
    res = {}
    for alt in ("two-sided", "less", "greater"):
        r = stats.mannwhitneyu(x, y, alternative=alt, **kw)
        key = {"two-sided": "p_two_sided", "less": "p_less", "greater": "p_greater"}[alt]
        res[key], res["u"] = float(r.pvalue), float(r.statistic)
    res["p"] = res["p_" + case.get("alternative", "two-sided").replace("-", "_")]
    del res["p_two_sided"]
    if np.isnan(x).any() or np.isnan(y).any():
        if kw["nan_policy"] == "propagate":
            for k in ("u2", "z", "shift", "ci_lo", "ci_hi", "mean_ratio", "cles"):
                res[k] = math.nan
            res.update(n1=len(x), n2=len(y), method=kw["method"])
            return res
        x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    res.update(derived(x, y, kw["method"], case.get("confidence", 0.95)))
    res["u2"] = len(x) * len(y) - res["u"]
    return res


def derived(x, y, method, confidence):
    n1, n2 = len(x), len(y)
    n, mn = n1 + n2, n1 * n2
    xy = np.concatenate([x, y])
    if method == "auto":
        method = _mannwhitneyu._mwu_choose_method(n1, n2, xy, method)
    _, t = np.unique(stats.rankdata(xy), return_counts=True)
    sd = math.sqrt(mn / 12 * ((n + 1) - float((t**3 - t).sum()) / (n * (n - 1))))
    u1 = stats.rankdata(xy)[:n1].sum() - n1 * (n1 + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.float64(u1 - mn / 2) / np.float64(sd)
        mean_ratio = np.float64(np.mean(y)) / np.float64(np.mean(x))
    with np.errstate(invalid="ignore"):
        d = np.sort(np.subtract.outer(y, x).ravel())
    k = math.floor(mn / 2 - stats.norm.ppf((1 + confidence) / 2) * sd)
    if k >= 1:
        lo, hi = d[k - 1], d[mn - k]
    else:
        lo, hi = -math.inf, math.inf
    gt = (y[:, None] > x[None, :]).mean()
    eq = (y[:, None] == x[None, :]).mean()
    return dict(method=method, n1=n1, n2=n2, z=float(z), shift=float(np.median(d)),
                ci_lo=float(lo), ci_hi=float(hi), mean_ratio=float(mean_ratio),
                cles=float(gt + 0.5 * eq))


def describe_case(case):
    x = sample(case["x"])
    x = x[~np.isnan(x)]
    k = case.get("k", 1.5)
    q1, q3 = np.quantile(x, [0.25, 0.75])
    lo, hi = q1 - k * (q3 - q1), q3 + k * (q3 - q1)
    return dict(mean=float(np.mean(x)), median=float(np.median(x)),
                quantiles=[float(v) for v in np.quantile(x, case.get("q", []))],
                iqr=[float(v) for v in x[(x >= lo) & (x <= hi)]],
                iqr_lo=float(lo), iqr_hi=float(hi))


def jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return [jsonable(e) for e in v]
    return v


def text(v):
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else jsonable(v)
    return str(v)


def main():
    cases = json.load(sys.stdin)
    if isinstance(cases, dict):
        cases = cases["cases"]
    kinds = {"mw": mw_case, "describe": describe_case}
    results = [kinds[c.get("kind", "mw")](c) for c in cases]
    if "--lines" in sys.argv[1:]:
        for i, r in enumerate(results, 1):
            for key, v in r.items():
                vs = v if isinstance(v, list) else [v]
                print(i, key, *[text(e) for e in vs])
    else:
        out = {"scipy": scipy.__version__,
               "results": [{k: jsonable(v) for k, v in r.items()} for r in results]}
        json.dump(out, sys.stdout, allow_nan=False)
        print()


if __name__ == "__main__":
    main()
