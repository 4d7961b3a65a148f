/* promtext.c: the `promtext` namespace — the Prometheus text format (0.0.4) parser of
 * promtext.h, its `parse` binding and the module table (the `select` binding lives in
 * src/promtext_select.c; the benchmark walk in bench/c/promtext_bench.c).
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
 *   promtext.select(text, selectors): aggregates without building the table; see
 *   src/promtext_select.c.
 *
 * Errors: malformed text is an operational failure (a target served garbage): nil plus
 * "line N: message". Wrong argument types, unknown option keys and bad selectors or
 * regexes are programming errors and raise, naming the key.
 */
#include "rollout/promtext.h"
#include "rollout/promtext_lua.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define NO_FAMILY ((size_t)-1)

struct promtext_fam {
    promtext_family pub;
    char *help_owned; /* the unescaped HELP text when it had escapes */
    uint32_t hash;
    unsigned char has_type, has_help, has_samples, reported;
};

/* ---------------------------------------------------------------- characters, numbers */

/* Character classes by table: one load per byte in the scanning loops. (GNU range
 * designators, which gcc and clang accept in C11 mode.) */
enum { C_BLANK = 1, C_DIGIT = 2, C_LABEL_START = 4, C_COLON = 8 };
static const unsigned char char_class[256] = {
    [' '] = C_BLANK,
    ['\t'] = C_BLANK,
    ['0' ... '9'] = C_DIGIT,
    ['a' ... 'z'] = C_LABEL_START,
    ['A' ... 'Z'] = C_LABEL_START,
    ['_'] = C_LABEL_START,
    [':'] = C_COLON,
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
    if (equals_nocase(s, n, "inf") || equals_nocase(s, n, "infinity")) return *out = neg ? -INFINITY : INFINITY, 0;
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
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                   1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
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
        if (equals_nocase(s, n, promtext_type_name((enum promtext_type)t))) return *out = (enum promtext_type)t, 0;
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

int promtext_grow(void **ptr, size_t *cap, size_t need, size_t elem) {
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
    uint32_t h = 2166136261u; /* FNV-1a */
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
    if (promtext_grow((void **)&p->fams, &p->capfams, p->nfams + 1, sizeof *p->fams)) return NO_FAMILY;
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
    size_t cur;          /* the family the last line belonged to */
    size_t scratch_used; /* bytes of p->scratch used by this line */
};

/* A printable, bounded excerpt of untrusted bytes for an error message. */
const char *promtext_excerpt(char out[40], const char *s, size_t n) {
    size_t k = n > 32 ? 32 : n;
    for (size_t i = 0; i < k; i++) out[i] = (s[i] >= 32 && s[i] < 127) ? s[i] : '?';
    if (n > k) memcpy(out + k, "...", 4);
    else out[k] = 0;
    return out;
}

/* The range designators above already need GCC or clang, so the attribute needs no guard. */
__attribute__((format(printf, 2, 3))) static int fail(struct ctx *c, const char *fmt, ...) {
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
    int sum_count = (sl == 4 && memcmp(suf, "_sum", 4) == 0) || (sl == 6 && memcmp(suf, "_count", 6) == 0);
    if (f->pub.type == PROMTEXT_SUMMARY) return sum_count;
    if (f->pub.type == PROMTEXT_HISTOGRAM) return sum_count || (sl == 7 && memcmp(suf, "_bucket", 7) == 0);
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
        return fail(c, "sample %s of histogram needs a _bucket, _sum or _count suffix", promtext_excerpt(ex, s, n));
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
            return fail(c,
                        dup              ? "duplicate %s for %s"
                        : f->has_samples ? "%s for %s after its samples"
                                         : "%s for %s is separated from its family's other lines",
                        kw, promtext_excerpt(ex, s, n));
        }
        if ((i = fam_create(p, s, n, h)) == NO_FAMILY) return fail_oom(c);
        int rc = switch_to(c, i);
        if (rc) return rc;
    }
    struct promtext_fam *f = &p->fams[i];
    if (kw[0] == 'T' ? f->has_type : f->has_help) return fail(c, "duplicate %s for %s", kw, promtext_excerpt(ex, s, n));
    if (f->has_samples) return fail(c, "%s for %s after its samples", kw, promtext_excerpt(ex, s, n));
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
                    promtext_excerpt(ex, name, (size_t)(token_end(name, e) - name)));
    size_t nlen = (size_t)(s - name), i = 0;
    int rc = family_of_meta(c, kw, name, nlen, &i);
    if (rc) return rc;
    struct promtext_fam *f = &c->p->fams[i];
    s = skip_blank(s, e);
    if (kw[0] == 'H') return set_help(c, f, s, e);
    const char *t = s;
    s = token_end(s, e);
    if (t == s) return fail(c, "TYPE line for %s without a type", promtext_excerpt(ex, name, nlen));
    if (parse_type(t, (size_t)(s - t), &f->pub.type))
        return fail(c, "unknown type \"%s\"", promtext_excerpt(ex, t, (size_t)(s - t)));
    if (skip_blank(s, e) != e) return fail(c, "unexpected text after the TYPE of %s", promtext_excerpt(ex, name, nlen));
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
static int unescape_value(struct ctx *c, const char *v, const char **sp, const char *e, promtext_str *out,
                          promtext_str label) {
    promtext_parser *p = c->p;
    char ex[40];
    if (promtext_grow((void **)&p->scratch, &p->capscratch, c->line_len, 1)) return fail_oom(c);
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
        else
            return fail(c, "invalid escape \\%c in the value of label %s", (*s >= 32 && *s < 127) ? *s : '?',
                        promtext_excerpt(ex, label.ptr, label.len));
    }
    if (s >= e) return fail(c, "unterminated value of label %s", promtext_excerpt(ex, label.ptr, label.len));
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
                return fail(c, "duplicate label %s", promtext_excerpt(ex, l[i].name.ptr, l[i].name.len));
    return 0;
}

/* One label: name="value". s is at the name; *sp is set past the closing quote. */
static int parse_label(struct ctx *c, const char *s, const char *e, const char **sp, promtext_label *out) {
    char ex[40];
    const char *ln = s;
    if (!is_label_start(*s)) return fail(c, "invalid label name at \"%s\"", promtext_excerpt(ex, s, (size_t)(e - s)));
    while (s < e && is_label_char(*s)) s++;
    out->name = (promtext_str){ln, (size_t)(s - ln)};
    s = skip_blank(s, e);
    if (s == e || *s != '=') return fail(c, "expected '=' after label %s", promtext_excerpt(ex, ln, out->name.len));
    s = skip_blank(s + 1, e);
    if (s == e || *s != '"')
        return fail(c, "expected '\"' to open the value of label %s", promtext_excerpt(ex, ln, out->name.len));
    const char *v = ++s;
    s = find_quote_or_backslash(s, e);
    if (s == e) return fail(c, "unterminated value of label %s", promtext_excerpt(ex, ln, out->name.len));
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
        if (promtext_grow((void **)&p->labels, &p->caplabels, n + 1, sizeof *p->labels)) return fail_oom(c);
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
                    promtext_excerpt(ex, p->labels[n - 1].name.ptr, p->labels[n - 1].name.len));
    }
    *sp = s + 1;
    *nout = n;
    return n > 1 ? check_duplicate_labels(c, n) : 0;
}

/* Value and optional timestamp, up to the end of the line. */
static int parse_value(struct ctx *c, const char *s, const char *e, promtext_sample *smp) {
    char ex[40];
    s = skip_blank(s, e);
    if (s == e) return fail(c, "missing value for %s", promtext_excerpt(ex, smp->name.ptr, smp->name.len));
    const char *v = s;
    s = token_end(s, e);
    if (promtext_parse_double(v, (size_t)(s - v), &smp->value))
        return fail(c, "bad value \"%s\"", promtext_excerpt(ex, v, (size_t)(s - v)));
    s = skip_blank(s, e);
    if (s == e) return 0;
    const char *t = s;
    s = token_end(s, e);
    if (parse_timestamp(t, (size_t)(s - t), &smp->timestamp))
        return fail(c, "bad timestamp \"%s\"", promtext_excerpt(ex, t, (size_t)(s - t)));
    smp->has_timestamp = 1;
    s = skip_blank(s, e);
    if (s != e) return fail(c, "unexpected text \"%s\" after the timestamp", promtext_excerpt(ex, s, (size_t)(e - s)));
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
        return fail(c, "invalid metric name at \"%s\"", promtext_excerpt(ex, s, (size_t)(e - s)));
    while (s < e && is_name_char(*s)) s++;
    promtext_sample smp = {.name = {name, (size_t)(s - name)}, .line = c->line};
    if (s < e && *s != '{' && !is_blank(*s))
        return fail(c, "invalid character '%c' in metric name %s", (*s >= 32 && *s < 127) ? *s : '?',
                    promtext_excerpt(ex, name, smp.name.len));
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

int promtext_parse(promtext_parser *p, const char *buf, size_t len, const promtext_handler *h, promtext_error *err) {
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

#define PARSER_MT "rollout.promtext.parser"

/* The module's parser lives in a userdata upvalue, so its buffers are reused across calls
 * and freed by __gc even when building a result raised. A call made while it is busy (a
 * Lua __gc finalizer run by the collector mid-build that parses again) gets a fresh one
 * instead: two parses never share buffers. The box is left on the stack to keep it alive.
 * [-0, +1, m] */
promtext_parser_box *promtext_parser_acquire(lua_State *L) {
    promtext_parser_box *b = luaL_checkudata(L, lua_upvalueindex(1), PARSER_MT);
    if (b->busy) {
        b = lua_newuserdatauv(L, sizeof *b, 0);
        promtext_parser_init(&b->parser);
        b->busy = 0;
        luaL_setmetatable(L, PARSER_MT);
    } else {
        lua_pushvalue(L, lua_upvalueindex(1));
    }
    b->busy = 1; /* stays set if the call raises: later calls then use fresh parsers */
    return b;
}

/* __gc [-0, +0, -] */
static int l_parser_gc(lua_State *L) {
    promtext_parser_box *b = luaL_checkudata(L, 1, PARSER_MT);
    promtext_parser_free(&b->parser);
    return 0;
}

/* Push nil, "line N: message" (or the message alone for line 0). [-0, +2, m] */
int promtext_push_parse_error(lua_State *L, const promtext_error *err) {
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
    size_t cur;       /* family index whose samples table is in `samples` */
    lua_Integer ncur; /* samples in it */
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
static int l_promtext_parse(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    luaL_checkstack(L, 16, "promtext.parse");
    lua_settop(L, 2);
    struct build b = {.L = L, .cur = NO_FAMILY};
    push_wanted(L, 2);
    b.want = lua_gettop(L);
    promtext_parser_box *box = promtext_parser_acquire(L); /* after the last check that may raise */
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
    if (rc != PROMTEXT_OK) return promtext_push_parse_error(L, &err);
    lua_pushvalue(L, b.families);
    lua_setfield(L, b.result, "families");
    lua_pushinteger(L, b.nfamilies);
    lua_setfield(L, b.result, "nfamilies");
    lua_pushinteger(L, b.nsamples);
    lua_setfield(L, b.result, "nsamples");
    lua_settop(L, b.result);
    return 1;
}

/* require("rollout.promtext") [-0, +1, e] */
int luaopen_rollout_promtext(lua_State *L) {
    static const luaL_Reg funcs[] = {
        {"parse", l_promtext_parse},
        {"select", l_promtext_select},
        {NULL, NULL},
    };
    promtext_select_init(L);
    luaL_newmetatable(L, PARSER_MT);
    lua_pushcfunction(L, l_parser_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlibtable(L, funcs);
    promtext_parser_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    promtext_parser_init(&box->parser);
    box->busy = 0;
    luaL_setmetatable(L, PARSER_MT);
    luaL_setfuncs(L, funcs, 1);
    return 1;
}
