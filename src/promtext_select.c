/* promtext_select.c: promtext.select — aggregation over Prometheus text without building
 * Lua tables (the scrape source's hot path). Part of the `promtext` namespace, registered
 * by luaopen_rollout_promtext in src/promtext.c; it parses with that module's shared parser.
 *
 * Lua API:
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
 *
 * Errors: malformed text is an operational failure: nil plus "line N: message". Wrong
 * argument types, unknown keys and bad selectors or regexes are programming errors and
 * raise, naming the key.
 */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "rollout/promtext.h"
#include "rollout/promtext_lua.h"

#define SELECT_MT "rollout.promtext.select_state"

enum match_op { MATCH_EQ, MATCH_NE, MATCH_RE, MATCH_NRE };

struct matcher {
    promtext_str label, value; /* point into the selectors table's strings */
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
    double sum;      /* sum selector: sum of values; histogram: of x_sum */
    double count;    /* histogram: of x_count */
    size_t nsamples; /* sum: matched samples; histogram: matched x_bucket */
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
    char *tmp; /* NUL-terminated copy of a label value for regexec */
    size_t captmp;
    struct group merged; /* scratch for a selector's ungrouped result */
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
static int l_select_state_gc(lua_State *L) {
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
            lua_pop(L, 1); /* the string stays alive in the selectors table */
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
        lua_pop(L, 1); /* where */
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
    if (!v) v = &empty; /* PromQL: a missing label matches "" */
    if (m->op == MATCH_EQ) return str_eq(*v, m->value);
    if (m->op == MATCH_NE) return !str_eq(*v, m->value);
    if (promtext_grow((void **)&st->tmp, &st->captmp, v->len + 1, 1)) return -1;
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
    if (promtext_grow((void **)&s->groups, &s->capgroups, s->ngroups + 1, sizeof *s->groups)) return NULL;
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
    if (promtext_grow((void **)&g->buckets, &g->capbuckets, g->nbuckets + 1, sizeof *g->buckets)) return -1;
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
                 promtext_excerpt(ex, smp->name.ptr, smp->name.len));
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
int l_promtext_select(lua_State *L) {
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
        st->nsel = i + 1; /* before compiling, so __gc frees a half-compiled one */
        compile_selector(L, &st->sel[i], (int)i + 1);
    }
    promtext_parser_box *box = promtext_parser_acquire(L); /* after the checks that may raise */
    promtext_handler h = {NULL, select_sample, st};
    int rc = promtext_parse(&box->parser, text, len, &h, &st->err);
    box->busy = 0;
    if (rc == SELECT_OOM) return luaL_error(L, "promtext.select: out of memory");
    if (rc != PROMTEXT_OK) return promtext_push_parse_error(L, &st->err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_selector_result(L, st, &st->sel[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* The select state's metatable (its __gc frees compiled selectors even when a call
 * raised). [-0, +0, m] */
void promtext_select_init(lua_State *L) {
    luaL_newmetatable(L, SELECT_MT);
    lua_pushcfunction(L, l_select_state_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}
