/* units.c: the `units` namespace. Parses the units playbooks are written in.
 *
 * Lua API:
 *   units.duration(v) -> seconds      number (seconds) or "250ms" "10s" "5m" "1h30m" "2d" "1.5s"
 *   units.ratio(v) -> fraction        number or "1%" "0.5%" "0.02"
 *   units.bytes(v) -> bytes           number or "512Mi" "2Gi" "1G" "100k"
 *   units.value(v) -> number, kind    any of the above; kind "duration"|"ratio"|"bytes"|"number"
 *   units.condition(s) -> {signal=, op=, value=, kind=}   "error_rate > 5%", "latency_p99 > 1s"
 * Error policy: each raises on malformed input (a configuration error), quoting the value;
 * units.parse(kind, v) returns nil, err instead, for validators that collect every error.
 */
#include "rollout/units.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

static int fail(char *err, size_t errlen, const char *what, const char *s, size_t n) {
    if (errlen) snprintf(err, errlen, "%s: \"%.*s\"", what, (int)(n > 60 ? 60 : n), s);
    return -1;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_space(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, size_t *n) {
    while (*n && is_space(**s)) (*s)++, (*n)--;
    while (*n && is_space((*s)[*n - 1])) (*n)--;
}

/* A decimal number without sign or exponent: digits [. digits]. Returns chars consumed. */
static size_t scan_decimal(const char *s, size_t n, double *out) {
    size_t i = 0;
    double v = 0, scale = 1;
    int digits = 0;
    while (i < n && is_digit(s[i])) v = v * 10 + (s[i++] - '0'), digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_digit(s[i])) scale /= 10, v += (s[i++] - '0') * scale, digits++;
    }
    if (!digits) return 0;
    *out = v;
    return i;
}

/* A plain number as strtod would read it, but bounded by n and locale-free enough for
 * config values: optional sign, decimal, optional exponent. */
static size_t scan_number(const char *s, size_t n, double *out) {
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    double v;
    size_t d = scan_decimal(s + i, n - i, &v);
    if (!d) return 0;
    i += d;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        int eneg = 0, e = 0, ed = 0;
        if (j < n && (s[j] == '-' || s[j] == '+')) eneg = s[j++] == '-';
        while (j < n && is_digit(s[j]) && e < 400) e = e * 10 + (s[j++] - '0'), ed++;
        if (ed) {
            if (v != 0) v *= pow(10, eneg ? -e : e); /* 0e999 is 0, not 0 * inf = NaN */
            i = j;
        }
    }
    *out = neg ? -v : v;
    return i;
}

static const struct {
    const char *name;
    double seconds;
} duration_units[] = {
    {"ns", 1e-9}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6}, {"ms", 1e-3}, {"s", 1},
    {"m", 60},    {"h", 3600},  {"d", 86400},        {NULL, 0},
};

static double duration_unit(const char *s, size_t n, size_t *len) {
    double best = -1;
    size_t best_len = 0;
    for (int i = 0; duration_units[i].name; i++) {
        size_t l = strlen(duration_units[i].name);
        if (l <= n && l > best_len && !memcmp(s, duration_units[i].name, l)) {
            best = duration_units[i].seconds;
            best_len = l;
        }
    }
    *len = best_len;
    return best;
}

int units_duration(const char *s, size_t n, double *out, char *err, size_t errlen) {
    const char *s0 = s;
    size_t n0 = n;
    trim(&s, &n);
    if (!n) return fail(err, errlen, "empty duration", s0, n0);
    double v;
    size_t i = scan_number(s, n, &v);
    if (i == n && i) { /* a bare number is seconds */
        if (!(v >= 0) || !isfinite(v)) return fail(err, errlen, "negative or infinite duration", s0, n0);
        *out = v;
        return 0;
    }
    double total = 0;
    i = 0;
    while (i < n) {
        size_t d = scan_decimal(s + i, n - i, &v), ul;
        if (!d) return fail(err, errlen, "malformed duration (want e.g. 250ms, 10s, 5m, 1h30m)", s0, n0);
        i += d;
        double unit = duration_unit(s + i, n - i, &ul);
        if (unit < 0)
            return fail(err, errlen, "malformed duration: each number needs a unit (ns, us, ms, s, m, h, d)", s0, n0);
        i += ul;
        total += v * unit;
    }
    if (!isfinite(total)) return fail(err, errlen, "duration too large", s0, n0);
    *out = total;
    return 0;
}

int units_ratio(const char *s, size_t n, double *out, char *err, size_t errlen) {
    const char *s0 = s;
    size_t n0 = n;
    trim(&s, &n);
    double v;
    size_t i = scan_number(s, n, &v);
    if (!i) return fail(err, errlen, "malformed ratio (want e.g. 1%, 0.5%, 0.02)", s0, n0);
    if (i < n && s[i] == '%') v /= 100, i++;
    if (i != n || !isfinite(v)) return fail(err, errlen, "malformed ratio (want e.g. 1%, 0.5%, 0.02)", s0, n0);
    *out = v;
    return 0;
}

static const struct {
    const char *name;
    double factor;
} byte_units[] = {
    {"Ki", 1024.0},
    {"Mi", 1048576.0},
    {"Gi", 1073741824.0},
    {"Ti", 1099511627776.0},
    {"k", 1e3},
    {"K", 1e3},
    {"M", 1e6},
    {"G", 1e9},
    {"T", 1e12},
    {"B", 1},
    {NULL, 0},
};

int units_bytes(const char *s, size_t n, double *out, char *err, size_t errlen) {
    const char *s0 = s;
    size_t n0 = n;
    trim(&s, &n);
    double v;
    size_t i = scan_number(s, n, &v);
    if (!i || v < 0) return fail(err, errlen, "malformed size (want e.g. 512Mi, 2Gi, 1G)", s0, n0);
    if (i < n) {
        int k;
        for (k = 0; byte_units[k].name; k++) {
            size_t l = strlen(byte_units[k].name);
            if (n - i == l && !memcmp(s + i, byte_units[k].name, l)) break;
            if (n - i == l + 1 && !memcmp(s + i, byte_units[k].name, l) && s[n - 1] == 'B' && l == 2) break;
        }
        if (!byte_units[k].name) return fail(err, errlen, "unknown size unit", s0, n0);
        v *= byte_units[k].factor;
    }
    if (!isfinite(v)) return fail(err, errlen, "size too large", s0, n0);
    *out = v;
    return 0;
}

int units_value(const char *s, size_t n, double *out, int *kind, char *err, size_t errlen) {
    const char *t = s;
    size_t m = n;
    trim(&t, &m);
    double v;
    size_t i = scan_number(t, m, &v);
    if (i && !isfinite(v)) return fail(err, errlen, "number too large", s, n);
    if (i && i == m) return *kind = UNIT_NUMBER, *out = v, 0;
    if (i && i + 1 == m && t[i] == '%') return *kind = UNIT_RATIO, *out = v / 100, 0;
    if (units_duration(t, m, out, NULL, 0) == 0) return *kind = UNIT_DURATION, 0;
    if (units_bytes(t, m, out, NULL, 0) == 0) return *kind = UNIT_BYTES, 0;
    return fail(err, errlen, "malformed value (want a number, 5%, 500ms or 2Gi)", s, n);
}

int units_parse_condition(const char *s, size_t n, units_condition *c, char *err, size_t errlen) {
    const char *s0 = s;
    size_t n0 = n, i = 0;
    trim(&s, &n);
    while (i < n && (s[i] == '_' || s[i] == '.' || is_digit(s[i]) || (s[i] >= 'a' && s[i] <= 'z') ||
                     (s[i] >= 'A' && s[i] <= 'Z')))
        i++;
    if (!i) return fail(err, errlen, "condition must start with a signal name", s0, n0);
    c->signal = s;
    c->signal_len = i;
    while (i < n && is_space(s[i])) i++;
    static const char *const ops[] = {">=", "<=", "==", "!=", ">", "<", NULL};
    int k;
    for (k = 0; ops[k]; k++) {
        size_t l = strlen(ops[k]);
        if (n - i >= l && !memcmp(s + i, ops[k], l)) break;
    }
    if (!ops[k]) return fail(err, errlen, "condition needs an operator (>, >=, <, <=, ==, !=)", s0, n0);
    memcpy(c->op, ops[k], strlen(ops[k]) + 1);
    i += strlen(ops[k]);
    if (units_value(s + i, n - i, &c->value, &c->kind, NULL, 0) != 0)
        return fail(err, errlen, "condition has a malformed value", s0, n0);
    return 0;
}

/* ---- Lua ------------------------------------------------------------------------ */

typedef int (*parse_fn)(const char *, size_t, double *, char *, size_t);

static const char *const kind_names[] = {"number", "duration", "ratio", "bytes"};

/* Parse argument 1 with fn; numbers pass through. Returns 1 with the value pushed, or
 * 0 with the error message pushed. [-0, +1, -] */
static int parse_arg(lua_State *L, int idx, parse_fn fn) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, idx);
        if (!(v >= 0) && fn == units_duration) return lua_pushliteral(L, "negative duration"), 0;
        lua_pushnumber(L, v);
        return 1;
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        return lua_pushfstring(L, "expected a number or a string, got %s", luaL_typename(L, idx)), 0;
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    char err[160];
    double v;
    if (fn(s, n, &v, err, sizeof err) != 0) return lua_pushstring(L, err), 0;
    lua_pushnumber(L, v);
    return 1;
}

static int raise_or_value(lua_State *L, parse_fn fn) {
    if (!parse_arg(L, 1, fn)) return lua_error(L);
    return 1;
}

/* units.duration(v) -> seconds  [-0, +1, e] */
static int l_units_duration(lua_State *L) { return raise_or_value(L, units_duration); }
/* units.ratio(v) -> fraction  [-0, +1, e] */
static int l_units_ratio(lua_State *L) { return raise_or_value(L, units_ratio); }
/* units.bytes(v) -> bytes  [-0, +1, e] */
static int l_units_bytes(lua_State *L) { return raise_or_value(L, units_bytes); }

static int value_of(const char *s, size_t n, double *out, char *err, size_t errlen) {
    int kind;
    return units_value(s, n, out, &kind, err, errlen);
}

/* units.parse(kind, v) -> value | nil, err  [-0, +1|2, e] */
static int l_units_parse(lua_State *L) {
    static const char *const kinds[] = {"duration", "ratio", "bytes", "value", NULL};
    static const parse_fn fns[] = {units_duration, units_ratio, units_bytes, value_of};
    int k = luaL_checkoption(L, 1, NULL, kinds);
    if (parse_arg(L, 2, fns[k])) return 1;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* units.value(v) -> number, kind  [-0, +2, e] */
static int l_units_value(lua_State *L) {
    if (lua_type(L, 1) == LUA_TNUMBER) {
        lua_settop(L, 1);
        lua_pushliteral(L, "number");
        return 2;
    }
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char err[160];
    double v;
    int kind;
    if (units_value(s, n, &v, &kind, err, sizeof err) != 0) return luaL_error(L, "%s", err);
    lua_pushnumber(L, v);
    lua_pushstring(L, kind_names[kind]);
    return 2;
}

/* units.condition(s) -> {signal=, op=, value=, kind=} | nil, err  [-0, +1|2, e] */
static int l_units_condition(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char err[160];
    units_condition c;
    if (units_parse_condition(s, n, &c, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, c.signal, c.signal_len);
    lua_setfield(L, -2, "signal");
    lua_pushstring(L, c.op);
    lua_setfield(L, -2, "op");
    lua_pushnumber(L, c.value);
    lua_setfield(L, -2, "value");
    lua_pushstring(L, kind_names[c.kind]);
    lua_setfield(L, -2, "kind");
    return 1;
}

static const luaL_Reg units_funcs[] = {
    {"duration", l_units_duration},
    {"ratio", l_units_ratio},
    {"bytes", l_units_bytes},
    {"value", l_units_value},
    {"condition", l_units_condition},
    {"parse", l_units_parse},
    {NULL, NULL},
};

/* require "rollout.units" -> module  [-0, +1, m] */
int luaopen_rollout_units(lua_State *L) {
    luaL_newlib(L, units_funcs);
    return 1;
}
