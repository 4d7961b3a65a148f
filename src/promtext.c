/* promtext.c: the `promtext` namespace — the Prometheus text format (0.0.4) parser of
 * promtext.h and its Lua bindings.
 *
 * Lua API (require("rollout.promtext")):
 *
 *   promtext.parse(text [, opts]) -> result | nil, "line N: message"
 *     opts.family = "name" or {"name", ...}: materialise only these families (the whole
 *     text is still checked). result = {
 *       families = { {name=, type="counter"|"gauge"|"histogram"|"summary"|"untyped",
 *                     help= (nil without HELP),
 *                     samples = { {name=, labels={k=v}, value=, timestamp= (integer ms,
 *                                  nil when absent)}, ... }}, ... },  -- order of appearance
 *       nfamilies=, nsamples= }                                     -- of the whole text
 *
 *   promtext.select(text, selectors) -> results | nil, "line N: message"
 *     Aggregates without building the table. selectors is a list; each one is
 *       {name = "metric", labels = {k = matcher, ...}, group_by = "label"}         (a sum)
 *       {histogram = "family", labels = ..., group_by = ...}           (a bucket vector)
 *     A matcher is a string (equal), or {eq=s} | {ne=s} | {re=s} | {nre=s}, where re is a
 *     POSIX extended regex anchored at both ends (Prometheus's =~). A missing label is the
 *     empty string, as in PromQL. results[i] for a sum: {value = sum (nil when nothing
 *     matched: no data is never 0), samples = n, groups = {[label value] = sum}}; for a
 *     histogram: {buckets = {{le=, count=}, ...} (summed by le, ascending), sum=, count=,
 *     samples = n (matching _bucket samples), groups = {[label value] = {buckets=, sum=,
 *     count=, samples=}}}; groups only with group_by.
 *
 *   promtext.bench_parse(text [, iterations]) -> {cpu=, wall=, samples=, families=}
 *                                               | nil, "line N: message"
 *     Walks the text `iterations` times (default 1) through the C callbacks, touching every
 *     label, without building Lua values. cpu is this thread's CPU time and wall the
 *     monotonic time of all iterations, in seconds; samples and families are per walk.
 *
 * Errors: malformed text is an operational failure (a target served garbage): nil plus
 * "line N: message". Wrong argument types, unknown option keys and bad selectors or
 * regexes are programming errors and raise, naming the key.
 */
#include "rollout/promtext.h"

#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#define NO_FAMILY ((size_t)-1)

struct promtext_fam {
    promtext_family pub;
    char *help_owned;           /* the unescaped HELP text when it had escapes */
    uint32_t hash;
    unsigned char has_type, has_help, has_samples, reported;
};

/* ---------------------------------------------------------------- characters, numbers */

/* Character classes by table: one load per byte in the scanning loops. (GNU range
 * designators, which gcc and clang accept in C11 mode.) */
enum { C_BLANK = 1, C_DIGIT = 2, C_LABEL_START = 4, C_COLON = 8 };
static const unsigned char char_class[256] = {
    [' '] = C_BLANK, ['\t'] = C_BLANK, ['0' ... '9'] = C_DIGIT, ['a' ... 'z'] = C_LABEL_START,
    ['A' ... 'Z'] = C_LABEL_START, ['_'] = C_LABEL_START, [':'] = C_COLON,
};

static inline int is_class(char c, int mask) { return char_class[(unsigned char)c] & mask; }
static inline int is_blank(char c) { return is_class(c, C_BLANK); }
static inline int is_digit(char c) { return is_class(c, C_DIGIT); }
static inline int is_label_start(char c) { return is_class(c, C_LABEL_START); }
static inline int is_label_char(char c) { return is_class(c, C_LABEL_START | C_DIGIT); }
static inline int is_name_start(char c) { return is_class(c, C_LABEL_START | C_COLON); }
static inline int is_name_char(char c) { return is_class(c, C_LABEL_START | C_DIGIT | C_COLON); }

/* The first '"' or '\\' in [s, e), or e: eight bytes at a time (the classic "has a zero
 * byte" test on the word XORed with each target), then bytewise for the tail. */
static inline const char *find_quote_or_backslash(const char *s, const char *e) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    for (; e - s >= 8; s += 8) {
        uint64_t w, q, b;
        memcpy(&w, s, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        if (((q - ones) & ~q & highs) | ((b - ones) & ~b & highs)) break;
    }
    while (s < e && *s != '"' && *s != '\\') s++;
    return s;
}

static inline const char *skip_blank(const char *s, const char *e) {
    while (s < e && is_blank(*s)) s++;
    return s;
}

static inline const char *token_end(const char *s, const char *e) {
    while (s < e && !is_blank(*s)) s++;
    return s;
}

static int equals_nocase(const char *s, size_t n, const char *word) {
    size_t i = 0;
    for (; i < n && word[i]; i++)
        if ((s[i] | 32) != word[i]) return 0;
    return i == n && word[i] == 0;
}

/* NaN, Inf, Infinity in any case, as Go's strconv.ParseFloat accepts them. */
static int parse_special(const char *s, size_t n, int neg, double *out) {
    if (equals_nocase(s, n, "nan")) return *out = NAN, 0;
    if (equals_nocase(s, n, "inf") || equals_nocase(s, n, "infinity"))
        return *out = neg ? -INFINITY : INFINITY, 0;
    return -1;
}

/* Correctly rounded fallback: strtod on a NUL-terminated copy (buf is not terminated).
 * strtod follows LC_NUMERIC; the host keeps the C locale, as Lua itself requires. */
static int parse_double_slow(const char *s, size_t n, double *out) {
    char tmp[400];
    if (n >= sizeof tmp) return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *end;
    *out = strtod(tmp, &end);
    return end == tmp + n ? 0 : -1;
}

/* Decimal floats. Up to 19 significant digits and |exponent| <= 22 take Clinger's exact
 * fast path (one multiply or divide of exact doubles); the rest go to strtod. */
int promtext_parse_double(const char *s, size_t n, double *out) {
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *p = s, *e = s + n;
    int neg = 0;
    if (p < e && (*p == '+' || *p == '-')) neg = *p++ == '-';
    if (p == e) return -1;
    if (!is_digit(*p) && *p != '.') return parse_special(p, (size_t)(e - p), neg, out);
    uint64_t m = 0;
    int nd = 0, exp10 = 0, any = 0, exact = 1;
    for (; p < e && is_digit(*p); p++, any = 1) {
        if (nd < 19) {
            if (m || *p != '0') m = m * 10 + (uint64_t)(*p - '0'), nd += m != 0;
        } else {
            exp10++;
            exact &= *p == '0';
        }
    }
    if (p < e && *p == '.') {
        for (p++; p < e && is_digit(*p); p++, any = 1) {
            if (nd < 19) {
                if (m || *p != '0') m = m * 10 + (uint64_t)(*p - '0'), nd += m != 0;
                exp10--;
            } else {
                exact &= *p == '0';
            }
        }
    }
    if (!any) return -1;
    if (p < e && (*p | 32) == 'e') {
        int eneg = 0, ev = 0;
        p++;
        if (p < e && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p == e || !is_digit(*p)) return -1;
        for (; p < e && is_digit(*p); p++)
            if (ev < 100000) ev = ev * 10 + (*p - '0');
        exp10 += eneg ? -ev : ev;
    }
    if (p != e) return -1;
    if (m == 0) return *out = neg ? -0.0 : 0.0, 0;
    if (exact && m <= (1ull << 53) && exp10 >= -22 && exp10 <= 22) {
        double d = (double)m;
        d = exp10 < 0 ? d / pow10[-exp10] : d * pow10[exp10];
        return *out = neg ? -d : d, 0;
    }
    return parse_double_slow(s, n, out);
}

static int parse_timestamp(const char *s, size_t n, int64_t *out) {
    const char *p = s, *e = s + n;
    int neg = 0;
    if (p < e && (*p == '+' || *p == '-')) neg = *p++ == '-';
    if (p == e) return -1;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; p < e; p++) {
        if (!is_digit(*p)) return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (limit - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

const char *promtext_type_name(enum promtext_type t) {
    static const char *const names[] = {"untyped", "counter", "gauge", "histogram", "summary"};
    return (unsigned)t < 5 ? names[t] : "untyped";
}

static int parse_type(const char *s, size_t n, enum promtext_type *out) {
    for (int t = PROMTEXT_UNTYPED; t <= PROMTEXT_SUMMARY; t++)
        if (equals_nocase(s, n, promtext_type_name((enum promtext_type)t)))
            return *out = (enum promtext_type)t, 0;
    return -1;
}

/* ---------------------------------------------------------------- parser memory */

void promtext_parser_init(promtext_parser *p) { memset(p, 0, sizeof *p); }

static void families_clear(promtext_parser *p) {
    for (size_t i = 0; i < p->nfams; i++) free(p->fams[i].help_owned);
    p->nfams = 0;
    if (p->slots) memset(p->slots, 0, p->capslots * sizeof *p->slots);
}

void promtext_parser_free(promtext_parser *p) {
    families_clear(p);
    free(p->fams);
    free(p->slots);
    free(p->labels);
    free(p->scratch);
    promtext_parser_init(p);
}

static int grow(void **ptr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    void *q = realloc(*ptr, n * elem);
    if (!q) return -1;
    *ptr = q;
    *cap = n;
    return 0;
}

/* ---------------------------------------------------------------- family index */

static uint32_t name_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;  /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int fam_is(const struct promtext_fam *f, const char *s, size_t n) {
    return f->pub.name.len == n && memcmp(f->pub.name.ptr, s, n) == 0;
}

static struct promtext_fam *fam_lookup(promtext_parser *p, const char *s, size_t n, uint32_t h) {
    if (!p->capslots) return NULL;
    size_t mask = p->capslots - 1;
    for (size_t i = h & mask; p->slots[i]; i = (i + 1) & mask) {
        struct promtext_fam *f = &p->fams[p->slots[i] - 1];
        if (f->hash == h && fam_is(f, s, n)) return f;
    }
    return NULL;
}

static void slots_insert(promtext_parser *p, uint32_t h, uint32_t index1) {
    size_t mask = p->capslots - 1, i = h & mask;
    while (p->slots[i]) i = (i + 1) & mask;
    p->slots[i] = index1;
}

/* Keep the index at most half full; rebuilt from fams when it grows. */
static int slots_reserve(promtext_parser *p, size_t nfams) {
    if (nfams * 2 <= p->capslots) return 0;
    size_t cap = p->capslots ? p->capslots * 2 : 64;
    while (nfams * 2 > cap) cap *= 2;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    free(p->slots);
    p->slots = slots;
    p->capslots = cap;
    for (size_t i = 0; i < p->nfams; i++) slots_insert(p, p->fams[i].hash, (uint32_t)i + 1);
    return 0;
}

/* A new family; returns its index or NO_FAMILY when out of memory. May move p->fams. */
static size_t fam_create(promtext_parser *p, const char *s, size_t n, uint32_t h) {
    if (p->nfams >= UINT32_MAX - 1) return NO_FAMILY;
    if (grow((void **)&p->fams, &p->capfams, p->nfams + 1, sizeof *p->fams)) return NO_FAMILY;
    if (slots_reserve(p, p->nfams + 1)) return NO_FAMILY;
    struct promtext_fam *f = &p->fams[p->nfams];
    memset(f, 0, sizeof *f);
    f->pub.name = (promtext_str){s, n};
    f->pub.type = PROMTEXT_UNTYPED;
    f->pub.index = p->nfams;
    f->hash = h;
    slots_insert(p, h, (uint32_t)++p->nfams);
    return p->nfams - 1;
}

/* ---------------------------------------------------------------- one parse */

struct ctx {
    promtext_parser *p;
    const promtext_handler *h;
    promtext_error *err;
    size_t line;
    size_t line_len;
    size_t cur;             /* the family the last line belonged to */
    size_t scratch_used;    /* bytes of p->scratch used by this line */
};

/* A printable, bounded excerpt of untrusted bytes for an error message. */
static const char *excerpt(char out[40], const char *s, size_t n) {
    size_t k = n > 32 ? 32 : n;
    for (size_t i = 0; i < k; i++) out[i] = (s[i] >= 32 && s[i] < 127) ? s[i] : '?';
    if (n > k) memcpy(out + k, "...", 4);
    else out[k] = 0;
    return out;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(struct ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err->message, sizeof c->err->message, fmt, ap);
    va_end(ap);
    c->err->line = c->line;
    return PROMTEXT_ERROR;
}

static int fail_oom(struct ctx *c) {
    fail(c, "out of memory");
    c->err->line = 0;
    return PROMTEXT_ERROR;
}

static int report(struct ctx *c, size_t i) {
    struct promtext_fam *f = &c->p->fams[i];
    if (f->reported) return 0;
    f->reported = 1;
    return c->h->family ? c->h->family(c->h->ud, &f->pub) : 0;
}

/* The previous family is complete when another one starts: report it if it had no sample. */
static int switch_to(struct ctx *c, size_t i) {
    int rc = 0;
    if (c->cur != NO_FAMILY && c->cur != i) rc = report(c, c->cur);
    c->cur = i;
    return rc;
}

/* Whether a sample named f's name + suf belongs to family f: 1 yes, 0 no, -1 a bare
 * histogram name. */
static int fam_owns_suffix(const struct promtext_fam *f, const char *suf, size_t sl) {
    if (sl == 0) return f->pub.type == PROMTEXT_HISTOGRAM ? -1 : 1;
    int sum_count = (sl == 4 && memcmp(suf, "_sum", 4) == 0) ||
                    (sl == 6 && memcmp(suf, "_count", 6) == 0);
    if (f->pub.type == PROMTEXT_SUMMARY) return sum_count;
    if (f->pub.type == PROMTEXT_HISTOGRAM)
        return sum_count || (sl == 7 && memcmp(suf, "_bucket", 7) == 0);
    return 0;
}

static int fam_owns(const struct promtext_fam *f, const char *s, size_t n) {
    size_t fl = f->pub.name.len;
    if (n < fl || memcmp(s, f->pub.name.ptr, fl) != 0) return 0;
    return fam_owns_suffix(f, s + fl, n - fl);
}

/* The family declared for x when sample x_bucket / x_sum / x_count has no family of its own. */
static struct promtext_fam *fam_by_suffix(promtext_parser *p, const char *s, size_t n) {
    static const char *const sufs[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        size_t sl = strlen(sufs[i]);
        if (n <= sl || memcmp(s + n - sl, sufs[i], sl) != 0) continue;
        struct promtext_fam *f = fam_lookup(p, s, n - sl, name_hash(s, n - sl));
        if (f && fam_owns(f, s, n) == 1) return f;
    }
    return NULL;
}

/* Find or create the family of a sample; reports families as they become known.
 * cur_prefix: the name is known to start with the current family's name. */
static int family_of_sample(struct ctx *c, const char *s, size_t n, int cur_prefix, size_t *out) {
    promtext_parser *p = c->p;
    char ex[40];
    int own = 0;
    if (cur_prefix) {
        size_t fl = p->fams[c->cur].pub.name.len;
        own = fam_owns_suffix(&p->fams[c->cur], s + fl, n - fl);
    }
    size_t i = c->cur;
    if (own == 0) {
        uint32_t h = name_hash(s, n);
        struct promtext_fam *f = fam_lookup(p, s, n, h);
        if (!f) f = fam_by_suffix(p, s, n);
        own = f ? fam_owns(f, s, n) : 1;
        if (f) i = (size_t)(f - p->fams);
        else if ((i = fam_create(p, s, n, h)) == NO_FAMILY) return fail_oom(c);
    }
    if (own < 0)
        return fail(c, "sample %s of histogram needs a _bucket, _sum or _count suffix",
                    excerpt(ex, s, n));
    int rc = switch_to(c, i);
    if (rc) return rc;
    p->fams[i].has_samples = 1;
    *out = i;
    return report(c, i);
}

/* The family a HELP or TYPE line is about: the current one, or a new one. A family seen
 * before, with other families in between, is complete and can no longer change. */
static int family_of_meta(struct ctx *c, const char *kw, const char *s, size_t n, size_t *out) {
    promtext_parser *p = c->p;
    char ex[40];
    size_t i = c->cur;
    if (i == NO_FAMILY || !fam_is(&p->fams[i], s, n)) {
        uint32_t h = name_hash(s, n);
        struct promtext_fam *f = fam_lookup(p, s, n, h);
        if (f) {
            int dup = kw[0] == 'T' ? f->has_type : f->has_help;
            return fail(c, dup ? "duplicate %s for %s"
                        : f->has_samples ? "%s for %s after its samples"
                                         : "%s for %s is separated from its family's other lines",
                        kw, excerpt(ex, s, n));
        }
        if ((i = fam_create(p, s, n, h)) == NO_FAMILY) return fail_oom(c);
        int rc = switch_to(c, i);
        if (rc) return rc;
    }
    struct promtext_fam *f = &p->fams[i];
    if (kw[0] == 'T' ? f->has_type : f->has_help)
        return fail(c, "duplicate %s for %s", kw, excerpt(ex, s, n));
    if (f->has_samples) return fail(c, "%s for %s after its samples", kw, excerpt(ex, s, n));
    *out = i;
    return 0;
}

/* HELP text: \\ and \n are escapes; any other backslash stays, as the Python client and
 * Prometheus's own scraper read it. */
static int set_help(struct ctx *c, struct promtext_fam *f, const char *s, const char *e) {
    f->has_help = 1;
    if (!memchr(s, '\\', (size_t)(e - s))) {
        f->pub.help = (promtext_str){s, (size_t)(e - s)};
        return 0;
    }
    char *d = malloc((size_t)(e - s) + 1), *o = d;
    if (!d) return fail_oom(c);
    for (; s < e; s++) {
        if (*s == '\\' && s + 1 < e && (s[1] == '\\' || s[1] == 'n')) *o++ = *++s == 'n' ? '\n' : '\\';
        else *o++ = *s;
    }
    f->help_owned = d;
    f->pub.help = (promtext_str){d, (size_t)(o - d)};
    return 0;
}

static int parse_meta(struct ctx *c, const char *kw, const char *s, const char *e) {
    char ex[40];
    const char *name = s;
    while (s < e && is_name_char(*s)) s++;
    if (s == name || !is_name_start(*name) || (s < e && !is_blank(*s)))
        return fail(c, "%s line without a valid metric name at \"%s\"", kw,
                    excerpt(ex, name, (size_t)(token_end(name, e) - name)));
    size_t nlen = (size_t)(s - name), i = 0;
    int rc = family_of_meta(c, kw, name, nlen, &i);
    if (rc) return rc;
    struct promtext_fam *f = &c->p->fams[i];
    s = skip_blank(s, e);
    if (kw[0] == 'H') return set_help(c, f, s, e);
    const char *t = s;
    s = token_end(s, e);
    if (t == s) return fail(c, "TYPE line for %s without a type", excerpt(ex, name, nlen));
    if (parse_type(t, (size_t)(s - t), &f->pub.type))
        return fail(c, "unknown type \"%s\"", excerpt(ex, t, (size_t)(s - t)));
    if (skip_blank(s, e) != e) return fail(c, "unexpected text after the TYPE of %s", excerpt(ex, name, nlen));
    f->has_type = 1;
    return 0;
}

/* "# HELP ..." and "# TYPE ..." are metadata; every other comment is ignored. */
static int parse_comment(struct ctx *c, const char *s, const char *e) {
    s = skip_blank(s, e);
    const char *kw = s;
    s = token_end(s, e);
    if (s - kw != 4 || (memcmp(kw, "HELP", 4) != 0 && memcmp(kw, "TYPE", 4) != 0)) return 0;
    return parse_meta(c, kw[0] == 'H' ? "HELP" : "TYPE", skip_blank(s, e), e);
}

/* The slow path of a label value with escapes: unescape into the line's scratch space. */
static int unescape_value(struct ctx *c, const char *v, const char **sp, const char *e,
                          promtext_str *out, promtext_str label) {
    promtext_parser *p = c->p;
    char ex[40];
    if (grow((void **)&p->scratch, &p->capscratch, c->line_len, 1)) return fail_oom(c);
    char *d = p->scratch + c->scratch_used, *o = d;
    const char *s = v;
    for (; s < e && *s != '"'; s++) {
        if (*s != '\\') {
            *o++ = *s;
            continue;
        }
        if (++s == e) break;
        if (*s == '\\' || *s == '"') *o++ = *s;
        else if (*s == 'n') *o++ = '\n';
        else return fail(c, "invalid escape \\%c in the value of label %s", (*s >= 32 && *s < 127) ? *s : '?',
                         excerpt(ex, label.ptr, label.len));
    }
    if (s >= e) return fail(c, "unterminated value of label %s", excerpt(ex, label.ptr, label.len));
    *out = (promtext_str){d, (size_t)(o - d)};
    c->scratch_used += (size_t)(o - d);
    *sp = s + 1;
    return 0;
}

static int check_duplicate_labels(struct ctx *c, size_t n) {
    const promtext_label *l = c->p->labels;
    char ex[40];
    for (size_t i = 1; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (l[i].name.len == l[j].name.len && memcmp(l[i].name.ptr, l[j].name.ptr, l[i].name.len) == 0)
                return fail(c, "duplicate label %s", excerpt(ex, l[i].name.ptr, l[i].name.len));
    return 0;
}

/* One label: name="value". s is at the name; *sp is set past the closing quote. */
static int parse_label(struct ctx *c, const char *s, const char *e, const char **sp, promtext_label *out) {
    char ex[40];
    const char *ln = s;
    if (!is_label_start(*s))
        return fail(c, "invalid label name at \"%s\"", excerpt(ex, s, (size_t)(e - s)));
    while (s < e && is_label_char(*s)) s++;
    out->name = (promtext_str){ln, (size_t)(s - ln)};
    s = skip_blank(s, e);
    if (s == e || *s != '=')
        return fail(c, "expected '=' after label %s", excerpt(ex, ln, out->name.len));
    s = skip_blank(s + 1, e);
    if (s == e || *s != '"')
        return fail(c, "expected '\"' to open the value of label %s", excerpt(ex, ln, out->name.len));
    const char *v = ++s;
    s = find_quote_or_backslash(s, e);
    if (s == e) return fail(c, "unterminated value of label %s", excerpt(ex, ln, out->name.len));
    if (*s == '\\') return unescape_value(c, v, sp, e, &out->value, out->name);
    out->value = (promtext_str){v, (size_t)(s - v)};
    *sp = s + 1;
    return 0;
}

/* After '{': labels up to the closing '}', a trailing comma allowed. */
static int parse_labels(struct ctx *c, const char *s, const char *e, const char **sp, size_t *nout) {
    promtext_parser *p = c->p;
    char ex[40];
    size_t n = 0;
    for (;;) {
        s = skip_blank(s, e);
        if (s < e && *s == '}') break;
        if (s == e) return fail(c, "unterminated label set");
        if (grow((void **)&p->labels, &p->caplabels, n + 1, sizeof *p->labels)) return fail_oom(c);
        int rc = parse_label(c, s, e, &s, &p->labels[n]);
        if (rc) return rc;
        n++;
        s = skip_blank(s, e);
        if (s < e && *s == ',') {
            s++;
            continue;
        }
        if (s < e && *s == '}') break;
        if (s == e) return fail(c, "unterminated label set");
        return fail(c, "expected ',' or '}' after the value of label %s",
                    excerpt(ex, p->labels[n - 1].name.ptr, p->labels[n - 1].name.len));
    }
    *sp = s + 1;
    *nout = n;
    return n > 1 ? check_duplicate_labels(c, n) : 0;
}

/* Value and optional timestamp, up to the end of the line. */
static int parse_value(struct ctx *c, const char *s, const char *e, promtext_sample *smp) {
    char ex[40];
    s = skip_blank(s, e);
    if (s == e) return fail(c, "missing value for %s", excerpt(ex, smp->name.ptr, smp->name.len));
    const char *v = s;
    s = token_end(s, e);
    if (promtext_parse_double(v, (size_t)(s - v), &smp->value))
        return fail(c, "bad value \"%s\"", excerpt(ex, v, (size_t)(s - v)));
    s = skip_blank(s, e);
    if (s == e) return 0;
    const char *t = s;
    s = token_end(s, e);
    if (parse_timestamp(t, (size_t)(s - t), &smp->timestamp))
        return fail(c, "bad timestamp \"%s\"", excerpt(ex, t, (size_t)(s - t)));
    smp->has_timestamp = 1;
    s = skip_blank(s, e);
    if (s != e) return fail(c, "unexpected text \"%s\" after the timestamp", excerpt(ex, s, (size_t)(e - s)));
    return 0;
}

static int parse_sample(struct ctx *c, const char *s, const char *e) {
    char ex[40];
    const char *name = s;
    int cur_prefix = 0;
    if (c->cur != NO_FAMILY) {
        /* Most samples continue the current family: skip its (valid) name with one memcmp
         * instead of classifying it byte by byte. */
        promtext_str fn = c->p->fams[c->cur].pub.name;
        if ((size_t)(e - s) >= fn.len && memcmp(s, fn.ptr, fn.len) == 0) s += fn.len, cur_prefix = 1;
    }
    if (!cur_prefix && !is_name_start(*s))
        return fail(c, "invalid metric name at \"%s\"", excerpt(ex, s, (size_t)(e - s)));
    while (s < e && is_name_char(*s)) s++;
    promtext_sample smp = {.name = {name, (size_t)(s - name)}, .line = c->line};
    if (s < e && *s != '{' && !is_blank(*s))
        return fail(c, "invalid character '%c' in metric name %s", (*s >= 32 && *s < 127) ? *s : '?',
                    excerpt(ex, name, smp.name.len));
    s = skip_blank(s, e);
    int rc;
    if (s < e && *s == '{' && (rc = parse_labels(c, s + 1, e, &s, &smp.nlabels))) return rc;
    if ((rc = parse_value(c, s, e, &smp))) return rc;
    size_t fi = 0;
    if ((rc = family_of_sample(c, smp.name.ptr, smp.name.len, cur_prefix, &fi))) return rc;
    smp.family = &c->p->fams[fi].pub;
    smp.labels = c->p->labels;
    return c->h->sample ? c->h->sample(c->h->ud, &smp) : 0;
}

static int parse_line(struct ctx *c, const char *s, const char *e) {
    if (e > s && e[-1] == '\r') e--;
    s = skip_blank(s, e);
    if (s == e) return 0;
    if (*s == '#') return parse_comment(c, s + 1, e);
    c->scratch_used = 0;
    return parse_sample(c, s, e);
}

int promtext_parse(promtext_parser *p, const char *buf, size_t len, const promtext_handler *h,
                   promtext_error *err) {
    struct ctx c = {.p = p, .h = h, .err = err, .cur = NO_FAMILY};
    families_clear(p);
    err->line = 0;
    err->message[0] = 0;
    const char *s = buf, *end = buf + len;
    while (s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol) eol = end;
        c.line++;
        c.line_len = (size_t)(eol - s);
        int rc = parse_line(&c, s, eol);
        if (rc) return rc;
        s = eol + 1;
    }
    return c.cur != NO_FAMILY ? report(&c, c.cur) : 0;
}

/* ---------------------------------------------------------------- Lua: shared parser */

#define PARSER_MT "rollout.promtext_parser"

typedef struct {
    promtext_parser parser;
    int busy;
} parser_box;

/* The module's parser lives in a userdata upvalue, so its buffers are reused across calls
 * and freed by __gc even when building a result raised. A call made while it is busy (a
 * Lua __gc finalizer run by the collector mid-build that parses again) gets a fresh one
 * instead: two parses never share buffers. The box is left on the stack to keep it alive.
 * [-0, +1, m] */
static parser_box *parser_acquire(lua_State *L) {
    parser_box *b = luaL_checkudata(L, lua_upvalueindex(1), PARSER_MT);
    if (b->busy) {
        b = lua_newuserdatauv(L, sizeof *b, 0);
        promtext_parser_init(&b->parser);
        b->busy = 0;
        luaL_setmetatable(L, PARSER_MT);
    } else {
        lua_pushvalue(L, lua_upvalueindex(1));
    }
    b->busy = 1;  /* stays set if the call raises: later calls then use fresh parsers */
    return b;
}

/* __gc [-0, +0, -] */
static int parser_gc(lua_State *L) {
    parser_box *b = luaL_checkudata(L, 1, PARSER_MT);
    promtext_parser_free(&b->parser);
    return 0;
}

/* Push nil, "line N: message" (or the message alone for line 0). [-0, +2, m] */
static int push_parse_error(lua_State *L, const promtext_error *err) {
    lua_pushnil(L);
    if (err->line) lua_pushfstring(L, "line %I: %s", (lua_Integer)err->line, err->message);
    else lua_pushstring(L, err->message);
    return 2;
}

/* ---------------------------------------------------------------- Lua: parse */

/* Stack slots used while building: the result, the families list, index -> samples
 * table, the wanted-family set (or nil), the current samples table. */
struct build {
    lua_State *L;
    int result, families, by_index, want, samples;
    size_t cur;                 /* family index whose samples table is in `samples` */
    lua_Integer ncur;           /* samples in it */
    lua_Integer nfamilies, nsamples, nbuilt;
};

static int wanted(struct build *b, const promtext_family *f) {
    if (lua_isnil(b->L, b->want)) return 1;
    lua_pushlstring(b->L, f->name.ptr, f->name.len);
    int yes = lua_rawget(b->L, b->want) != LUA_TNIL;
    lua_pop(b->L, 1);
    return yes;
}

static int build_family(void *ud, const promtext_family *f) {
    struct build *b = ud;
    lua_State *L = b->L;
    b->nfamilies++;
    if (!wanted(b, f)) return 0;
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, f->name.ptr, f->name.len);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, promtext_type_name(f->type));
    lua_setfield(L, -2, "type");
    if (f->help.ptr) {
        lua_pushlstring(L, f->help.ptr, f->help.len);
        lua_setfield(L, -2, "help");
    }
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawseti(L, b->by_index, (lua_Integer)f->index + 1);
    lua_setfield(L, -2, "samples");
    lua_rawseti(L, b->families, ++b->nbuilt);
    return 0;
}

/* Make b->samples the samples table of family `index`; 0 when that family is not wanted. */
static int select_family(struct build *b, size_t index) {
    if (b->cur == index) return !lua_isnil(b->L, b->samples);
    lua_rawgeti(b->L, b->by_index, (lua_Integer)index + 1);
    lua_replace(b->L, b->samples);
    b->cur = index;
    b->ncur = lua_isnil(b->L, b->samples) ? 0 : (lua_Integer)lua_rawlen(b->L, b->samples);
    return !lua_isnil(b->L, b->samples);
}

static int build_sample(void *ud, const promtext_sample *s) {
    struct build *b = ud;
    lua_State *L = b->L;
    b->nsamples++;
    if (!select_family(b, s->family->index)) return 0;
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, s->name.ptr, s->name.len);
    lua_setfield(L, -2, "name");
    lua_createtable(L, 0, (int)s->nlabels);
    for (size_t i = 0; i < s->nlabels; i++) {
        lua_pushlstring(L, s->labels[i].name.ptr, s->labels[i].name.len);
        lua_pushlstring(L, s->labels[i].value.ptr, s->labels[i].value.len);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "labels");
    lua_pushnumber(L, s->value);
    lua_setfield(L, -2, "value");
    if (s->has_timestamp) {
        lua_pushinteger(L, (lua_Integer)s->timestamp);
        lua_setfield(L, -2, "timestamp");
    }
    lua_rawseti(L, b->samples, ++b->ncur);
    return 0;
}

/* opts.family: a name or a list of names -> a set at the top of the stack (nil if absent). */
static void push_wanted(lua_State *L, int opts) {
    if (lua_isnoneornil(L, opts)) {
        lua_pushnil(L);
        return;
    }
    luaL_checktype(L, opts, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "family") != 0) luaL_error(L, "promtext.parse: unknown option '%s'", k);
        lua_pop(L, 1);
    }
    lua_newtable(L);
    int t = lua_getfield(L, opts, "family");
    if (t == LUA_TSTRING) {
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        return;
    }
    if (t != LUA_TTABLE) luaL_error(L, "promtext.parse: opts.family must be a string or a list of strings");
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "promtext.parse: opts.family[%d] must be a string", (int)i);
        lua_pushboolean(L, 1);
        lua_rawset(L, -4);
    }
    lua_pop(L, 2);
}

/* promtext.parse(text [, opts]) [-0, +1|2, e] */
static int l_parse(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    luaL_checkstack(L, 16, "promtext.parse");
    lua_settop(L, 2);
    struct build b = {.L = L, .cur = NO_FAMILY};
    push_wanted(L, 2);
    b.want = lua_gettop(L);
    parser_box *box = parser_acquire(L);  /* after the last check that may raise */
    lua_createtable(L, 0, 3);
    b.result = lua_gettop(L);
    lua_newtable(L);
    b.families = lua_gettop(L);
    lua_newtable(L);
    b.by_index = lua_gettop(L);
    lua_pushnil(L);
    b.samples = lua_gettop(L);
    promtext_handler h = {build_family, build_sample, &b};
    promtext_error err;
    int rc = promtext_parse(&box->parser, text, len, &h, &err);
    box->busy = 0;
    if (rc != PROMTEXT_OK) return push_parse_error(L, &err);
    lua_pushvalue(L, b.families);
    lua_setfield(L, b.result, "families");
    lua_pushinteger(L, b.nfamilies);
    lua_setfield(L, b.result, "nfamilies");
    lua_pushinteger(L, b.nsamples);
    lua_setfield(L, b.result, "nsamples");
    lua_settop(L, b.result);
    return 1;
}

/* ---------------------------------------------------------------- Lua: bench_parse */

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

/* promtext.bench_parse(text [, iterations]) [-0, +1|2, e] */
static int l_bench_parse(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_Integer iterations = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, iterations >= 1, 2, "iterations must be >= 1");
    parser_box *box = parser_acquire(L);
    struct walk w = {0};
    promtext_handler h = {walk_family, walk_sample, &w};
    promtext_error err;
    double cpu0 = clock_seconds(CLOCK_THREAD_CPUTIME_ID), wall0 = clock_seconds(CLOCK_MONOTONIC);
    int rc = PROMTEXT_OK;
    for (lua_Integer i = 0; i < iterations && rc == PROMTEXT_OK; i++) {
        w.nfamilies = w.nsamples = 0;
        rc = promtext_parse(&box->parser, text, len, &h, &err);
    }
    box->busy = 0;
    if (rc != PROMTEXT_OK) return push_parse_error(L, &err);
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

/* ---------------------------------------------------------------- Lua: select */

#define SELECT_MT "rollout.promtext_select"

enum match_op { MATCH_EQ, MATCH_NE, MATCH_RE, MATCH_NRE };

struct matcher {
    promtext_str label, value;  /* point into the selectors table's strings */
    enum match_op op;
    int has_re;
    regex_t re;
};

struct bucket {
    double le, count;
};

struct group {
    char *key;
    size_t klen;
    double sum;                 /* sum selector: sum of values; histogram: of x_sum */
    double count;               /* histogram: of x_count */
    size_t nsamples;            /* sum: matched samples; histogram: matched x_bucket */
    size_t nsum, ncount;
    struct bucket *buckets;
    size_t nbuckets, capbuckets;
};

struct selector {
    int histogram;
    promtext_str name;
    struct matcher *matchers;
    size_t nmatchers;
    int has_group;
    promtext_str group_by;
    struct group *groups;
    size_t ngroups, capgroups;
};

struct select_state {
    struct selector *sel;
    size_t nsel;
    char *tmp;                  /* NUL-terminated copy of a label value for regexec */
    size_t captmp;
    struct group merged;        /* scratch for a selector's ungrouped result */
    promtext_error err;
};

static void selector_free(struct selector *s) {
    for (size_t i = 0; i < s->nmatchers; i++)
        if (s->matchers[i].has_re) regfree(&s->matchers[i].re);
    free(s->matchers);
    for (size_t i = 0; i < s->ngroups; i++) {
        free(s->groups[i].key);
        free(s->groups[i].buckets);
    }
    free(s->groups);
}

/* __gc [-0, +0, -] */
static int select_gc(lua_State *L) {
    struct select_state *st = luaL_checkudata(L, 1, SELECT_MT);
    for (size_t i = 0; i < st->nsel; i++) selector_free(&st->sel[i]);
    free(st->sel);
    free(st->tmp);
    free(st->merged.buckets);
    memset(st, 0, sizeof *st);
    return 0;
}

static void *xcalloc(lua_State *L, size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) luaL_error(L, "promtext.select: out of memory");
    return p;
}

/* Only `allowed` keys in the table at idx; raises naming the unknown key. */
static void check_keys(lua_State *L, int idx, const char *const *allowed, const char *where) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int ok = 0;
        for (const char *const *a = allowed; k && *a; a++) ok |= strcmp(k, *a) == 0;
        if (!ok) luaL_error(L, "promtext.select: %s: unknown key '%s'", where, k ? k : luaL_typename(L, -1));
    }
}

static void compile_regex(lua_State *L, struct matcher *m, const char *where) {
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    luaL_addstring(&B, "^(");
    luaL_addlstring(&B, m->value.ptr, m->value.len);
    luaL_addstring(&B, ")$");
    luaL_pushresult(&B);
    int rc = regcomp(&m->re, lua_tostring(L, -1), REG_EXTENDED | REG_NOSUB);
    lua_pop(L, 1);
    if (rc) {
        char msg[128];
        regerror(rc, &m->re, msg, sizeof msg);
        luaL_error(L, "promtext.select: %s: bad regex: %s", where, msg);
    }
    m->has_re = 1;
}

/* labels[k] at the top of the stack -> m. Pops it. */
static void compile_matcher(lua_State *L, struct matcher *m, const char *where) {
    static const char *const ops[] = {"eq", "ne", "re", "nre", NULL};
    if (lua_type(L, -1) == LUA_TTABLE) {
        int t = lua_gettop(L), found = 0;
        check_keys(L, t, ops, where);
        for (int i = 0; ops[i]; i++) {
            if (lua_getfield(L, t, ops[i]) == LUA_TNIL) {
                lua_pop(L, 1);
                continue;
            }
            if (lua_type(L, -1) != LUA_TSTRING || found++)
                luaL_error(L, "promtext.select: %s: expected exactly one of eq, ne, re, nre with a string", where);
            m->op = (enum match_op)i;
            m->value.ptr = lua_tolstring(L, -1, &m->value.len);
            lua_pop(L, 1);  /* the string stays alive in the selectors table */
        }
        if (!found) luaL_error(L, "promtext.select: %s: expected one of eq, ne, re, nre", where);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        m->op = MATCH_EQ;
        m->value.ptr = lua_tolstring(L, -1, &m->value.len);
    } else {
        luaL_error(L, "promtext.select: %s: expected a string or {eq|ne|re|nre = string}", where);
    }
    if (m->op == MATCH_RE || m->op == MATCH_NRE) compile_regex(L, m, where);
    lua_pop(L, 1);
}

/* selector.labels at the top of the stack -> s->matchers. Pops it. */
static void compile_labels(lua_State *L, struct selector *s, int index) {
    if (lua_isnil(L, -1)) return (void)lua_pop(L, 1);
    if (!lua_istable(L, -1)) luaL_error(L, "promtext.select: selectors[%d].labels must be a table", index);
    int t = lua_gettop(L);
    size_t n = 0;
    for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) n++;
    s->matchers = xcalloc(L, n, sizeof *s->matchers);
    for (lua_pushnil(L); lua_next(L, t);) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "promtext.select: selectors[%d].labels: keys must be label names", index);
        struct matcher *m = &s->matchers[s->nmatchers++];
        m->label.ptr = lua_tolstring(L, -2, &m->label.len);
        const char *where = lua_pushfstring(L, "selectors[%d].labels.%s", index, m->label.ptr);
        lua_insert(L, -2);
        compile_matcher(L, m, where);
        lua_pop(L, 1);  /* where */
    }
    lua_pop(L, 1);
}

static const char *optional_string(lua_State *L, int t, const char *key, size_t *len, int index) {
    int type = lua_getfield(L, t, key);
    const char *s = type == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
    if (type != LUA_TNIL && !s) luaL_error(L, "promtext.select: selectors[%d].%s must be a string", index, key);
    lua_pop(L, 1);
    return s;
}

static void compile_selector(lua_State *L, struct selector *s, int index) {
    static const char *const keys[] = {"name", "histogram", "labels", "group_by", NULL};
    char where[48];
    snprintf(where, sizeof where, "selectors[%d]", index);
    if (lua_rawgeti(L, 2, index) != LUA_TTABLE) luaL_error(L, "promtext.select: %s must be a table", where);
    int t = lua_gettop(L);
    check_keys(L, t, keys, where);
    size_t nlen = 0, hlen = 0;
    const char *name = optional_string(L, t, "name", &nlen, index);
    const char *hist = optional_string(L, t, "histogram", &hlen, index);
    if (!name == !hist) luaL_error(L, "promtext.select: %s needs exactly one of name, histogram", where);
    s->histogram = hist != NULL;
    s->name = hist ? (promtext_str){hist, hlen} : (promtext_str){name, nlen};
    s->group_by.ptr = optional_string(L, t, "group_by", &s->group_by.len, index);
    s->has_group = s->group_by.ptr != NULL;
    lua_getfield(L, t, "labels");
    compile_labels(L, s, index);
    lua_pop(L, 1);
}

static const promtext_str *label_value(const promtext_sample *smp, promtext_str name) {
    for (size_t i = 0; i < smp->nlabels; i++)
        if (smp->labels[i].name.len == name.len && memcmp(smp->labels[i].name.ptr, name.ptr, name.len) == 0)
            return &smp->labels[i].value;
    return NULL;
}

static int str_eq(promtext_str a, promtext_str b) { return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0; }

/* 1 match, 0 no match, -1 out of memory. */
static int matcher_test(struct select_state *st, const struct matcher *m, const promtext_sample *smp) {
    static const promtext_str empty = {"", 0};
    const promtext_str *v = label_value(smp, m->label);
    if (!v) v = &empty;  /* PromQL: a missing label matches "" */
    if (m->op == MATCH_EQ) return str_eq(*v, m->value);
    if (m->op == MATCH_NE) return !str_eq(*v, m->value);
    if (grow((void **)&st->tmp, &st->captmp, v->len + 1, 1)) return -1;
    memcpy(st->tmp, v->ptr, v->len);
    st->tmp[v->len] = 0;
    int hit = regexec(&m->re, st->tmp, 0, NULL, 0) == 0;
    return m->op == MATCH_RE ? hit : !hit;
}

/* Which part of a histogram family a sample is: 'b'ucket, 's'um, 'c'ount, or 0. */
static int histogram_part(const struct selector *s, promtext_str name) {
    size_t n = s->name.len;
    if (name.len <= n || memcmp(name.ptr, s->name.ptr, n) != 0) return 0;
    promtext_str suf = {name.ptr + n, name.len - n};
    if (str_eq(suf, (promtext_str){"_bucket", 7})) return 'b';
    if (str_eq(suf, (promtext_str){"_sum", 4})) return 's';
    if (str_eq(suf, (promtext_str){"_count", 6})) return 'c';
    return 0;
}

static struct group *find_group(struct selector *s, const promtext_sample *smp) {
    promtext_str key = {"", 0};
    if (s->has_group) {
        const promtext_str *v = label_value(smp, s->group_by);
        if (v) key = *v;
    }
    for (size_t i = 0; i < s->ngroups; i++)
        if (str_eq((promtext_str){s->groups[i].key, s->groups[i].klen}, key)) return &s->groups[i];
    if (grow((void **)&s->groups, &s->capgroups, s->ngroups + 1, sizeof *s->groups)) return NULL;
    struct group *g = &s->groups[s->ngroups];
    memset(g, 0, sizeof *g);
    if (!(g->key = malloc(key.len + 1))) return NULL;
    memcpy(g->key, key.ptr, key.len);
    g->klen = key.len;
    s->ngroups++;
    return g;
}

/* Add to the bucket with this le, keeping buckets sorted by le. */
static int add_bucket(struct group *g, double le, double count) {
    size_t i = 0;
    while (i < g->nbuckets && g->buckets[i].le < le) i++;
    if (i < g->nbuckets && g->buckets[i].le == le) {
        g->buckets[i].count += count;
        return 0;
    }
    if (grow((void **)&g->buckets, &g->capbuckets, g->nbuckets + 1, sizeof *g->buckets)) return -1;
    memmove(&g->buckets[i + 1], &g->buckets[i], (g->nbuckets - i) * sizeof *g->buckets);
    g->buckets[i] = (struct bucket){le, count};
    g->nbuckets++;
    return 0;
}

#define SELECT_OOM 2
#define SELECT_BAD_LE 3

static int accumulate(struct select_state *st, struct selector *s, const promtext_sample *smp) {
    int part = 0;
    if (s->histogram ? !(part = histogram_part(s, smp->name)) : !str_eq(smp->name, s->name)) return 0;
    for (size_t i = 0; i < s->nmatchers; i++) {
        int hit = matcher_test(st, &s->matchers[i], smp);
        if (hit < 0) return SELECT_OOM;
        if (!hit) return 0;
    }
    struct group *g = find_group(s, smp);
    if (!g) return SELECT_OOM;
    if (!s->histogram) return g->sum += smp->value, g->nsamples++, 0;
    if (part == 's') return g->sum += smp->value, g->nsum++, 0;
    if (part == 'c') return g->count += smp->value, g->ncount++, 0;
    const promtext_str *le = label_value(smp, (promtext_str){"le", 2});
    double lev;
    if (!le || promtext_parse_double(le->ptr, le->len, &lev) || lev != lev) {
        char ex[40];
        st->err.line = smp->line;
        snprintf(st->err.message, sizeof st->err.message, "%s without a valid le label",
                 excerpt(ex, smp->name.ptr, smp->name.len));
        return SELECT_BAD_LE;
    }
    g->nsamples++;
    return add_bucket(g, lev, smp->value) ? SELECT_OOM : 0;
}

static int select_sample(void *ud, const promtext_sample *smp) {
    struct select_state *st = ud;
    for (size_t i = 0; i < st->nsel; i++) {
        int rc = accumulate(st, &st->sel[i], smp);
        if (rc) return rc;
    }
    return 0;
}

/* {buckets=, sum=, count=, samples=} of one histogram group. [-0, +1, m] */
static void push_histogram_group(lua_State *L, const struct group *g) {
    lua_createtable(L, 0, 4);
    lua_createtable(L, (int)g->nbuckets, 0);
    for (size_t i = 0; i < g->nbuckets; i++) {
        lua_createtable(L, 0, 2);
        lua_pushnumber(L, g->buckets[i].le);
        lua_setfield(L, -2, "le");
        lua_pushnumber(L, g->buckets[i].count);
        lua_setfield(L, -2, "count");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "buckets");
    if (g->nsum) lua_pushnumber(L, g->sum), lua_setfield(L, -2, "sum");
    if (g->ncount) lua_pushnumber(L, g->count), lua_setfield(L, -2, "count");
    lua_pushinteger(L, (lua_Integer)g->nsamples);
    lua_setfield(L, -2, "samples");
}

/* Sum every group into one (the ungrouped view); keeps all->buckets' memory. */
static int merge_groups(const struct selector *s, struct group *all) {
    struct bucket *keep = all->buckets;
    size_t cap = all->capbuckets;
    memset(all, 0, sizeof *all);
    all->buckets = keep;
    all->capbuckets = cap;
    for (size_t i = 0; i < s->ngroups; i++) {
        const struct group *g = &s->groups[i];
        all->sum += g->sum, all->count += g->count;
        all->nsamples += g->nsamples, all->nsum += g->nsum, all->ncount += g->ncount;
        for (size_t j = 0; j < g->nbuckets; j++)
            if (add_bucket(all, g->buckets[j].le, g->buckets[j].count)) return -1;
    }
    return 0;
}

/* One selector's result table. [-0, +1, m] */
static void push_selector_result(lua_State *L, struct select_state *st, const struct selector *s) {
    struct group *all = &st->merged;
    if (merge_groups(s, all)) luaL_error(L, "promtext.select: out of memory");
    if (s->histogram) {
        push_histogram_group(L, all);
    } else {
        lua_createtable(L, 0, 3);
        if (all->nsamples) lua_pushnumber(L, all->sum), lua_setfield(L, -2, "value");
        lua_pushinteger(L, (lua_Integer)all->nsamples);
        lua_setfield(L, -2, "samples");
    }
    if (!s->has_group) return;
    lua_createtable(L, 0, (int)s->ngroups);
    for (size_t i = 0; i < s->ngroups; i++) {
        lua_pushlstring(L, s->groups[i].key, s->groups[i].klen);
        if (s->histogram) push_histogram_group(L, &s->groups[i]);
        else lua_pushnumber(L, s->groups[i].sum);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "groups");
}

/* promtext.select(text, selectors) [-0, +1|2, e] */
static int l_select(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    struct select_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    luaL_setmetatable(L, SELECT_MT);
    size_t n = lua_rawlen(L, 2);
    st->sel = xcalloc(L, n, sizeof *st->sel);
    for (size_t i = 0; i < n; i++) {
        st->nsel = i + 1;  /* before compiling, so __gc frees a half-compiled one */
        compile_selector(L, &st->sel[i], (int)i + 1);
    }
    parser_box *box = parser_acquire(L);  /* after the checks that may raise */
    promtext_handler h = {NULL, select_sample, st};
    int rc = promtext_parse(&box->parser, text, len, &h, &st->err);
    box->busy = 0;
    if (rc == SELECT_OOM) return luaL_error(L, "promtext.select: out of memory");
    if (rc != PROMTEXT_OK) return push_parse_error(L, &st->err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_selector_result(L, st, &st->sel[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* ---------------------------------------------------------------- module */

/* require("rollout.promtext") [-0, +1, e] */
int luaopen_rollout_promtext(lua_State *L) {
    static const luaL_Reg funcs[] = {
        {"parse", l_parse},
        {"select", l_select},
        {"bench_parse", l_bench_parse},
        {NULL, NULL},
    };
    luaL_newmetatable(L, SELECT_MT);
    lua_pushcfunction(L, select_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, PARSER_MT);
    lua_pushcfunction(L, parser_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlibtable(L, funcs);
    parser_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    promtext_parser_init(&box->parser);
    box->busy = 0;
    luaL_setmetatable(L, PARSER_MT);
    luaL_setfuncs(L, funcs, 1);
    return 1;
}
