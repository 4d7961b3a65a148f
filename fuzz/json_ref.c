/* json_ref.c: the JSON decoder as it was before it decoded through cJSON (a hand-written
 * strict RFC 8259 parser), kept only as fuzz_json's reference: every input must decode to
 * the same value, or fail with the same "line L column C: message", under both. Only the
 * decoder is kept (the oracle compares the two decoders' values through src/json.c's
 * encoder); json.null and json.array_mt are src/json.c's own. Not part of the product. */
#include "rollout/json.h"

#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* lua_error does not return; this tells the compiler so. */
static _Noreturn void raise_error(lua_State *L) {
    lua_error(L);
    abort();
}

static void copy_error(char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "%s", msg ? msg : "unknown error");
}

/* Length of the valid UTF-8 sequence at p (p[0] >= 0x80), or 0 when it is not valid:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    size_t n, i;

    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi) return 0;
    for (i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return n;
}

/* ------------------------------------------------------------------ decoder */

struct decoder {
    lua_State *L;
    const char *start, *p, *end;
    int depth;
    int bigint_string;
    int null_idx, array_mt; /* stack slots holding json.null and json.array_mt */
};

static void decode_value(struct decoder *d);

static void position_of(const struct decoder *d, const char *at, lua_Integer *line, lua_Integer *col) {
    const char *bol = d->start;
    *line = 1;
    for (const char *q = d->start; q < at; q++)
        if (*q == '\n') (*line)++, bol = q + 1;
    *col = (lua_Integer)(at - bol) + 1;
}

static const char *describe_byte(const struct decoder *d, const char *at, char buf[16]) {
    unsigned char c;
    if (at >= d->end) return "end of input";
    c = (unsigned char)*at;
    if (c > 0x20 && c < 0x7F) snprintf(buf, 16, "'%c'", c);
    else snprintf(buf, 16, "byte 0x%02X", c);
    return buf;
}

/* Raise "line L column C: <message>"; decode runs protected, json.decode returns it. */
static _Noreturn void decode_error(const struct decoder *d, const char *at, const char *fmt, ...) {
    lua_Integer line, col;
    va_list ap;
    position_of(d, at, &line, &col);
    lua_pushfstring(d->L, "line %I column %I: ", (LUAI_UACINT)line, (LUAI_UACINT)col);
    va_start(ap, fmt);
    lua_pushvfstring(d->L, fmt, ap);
    va_end(ap);
    lua_concat(d->L, 2);
    raise_error(d->L);
}

static _Noreturn void expected(const struct decoder *d, const char *what) {
    char buf[16];
    decode_error(d, d->p, "expected %s, found %s", what, describe_byte(d, d->p, buf));
}

static int peek(const struct decoder *d, char c) { return d->p < d->end && *d->p == c; }

static void skip_space(struct decoder *d) {
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t')) d->p++;
}

static void enter(struct decoder *d) {
    if (++d->depth > JSON_MAX_DEPTH) decode_error(d, d->p, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    if (!lua_checkstack(d->L, 4)) decode_error(d, d->p, "nesting too deep for the Lua stack");
    d->p++;
    skip_space(d);
}

/* After a ',' inside a container closed by `close`. */
static void skip_comma(struct decoder *d, char close) {
    const char *comma = d->p++;
    skip_space(d);
    if (peek(d, close)) decode_error(d, comma, "trailing comma before '%c'", close);
}

/* --- strings */

/* Skip bytes that need no decoding; stop at '"', '\\' or the end. */
static const char *scan_plain(const struct decoder *d, const char *q) {
    while (q < d->end) {
        unsigned char c = (unsigned char)*q;
        size_t n;
        if (c == '"' || c == '\\') return q;
        if (c < 0x20) {
            char buf[16];
            decode_error(d, q, "unescaped control character (%s) in a string", describe_byte(d, q, buf));
        }
        if (c < 0x80) {
            q++;
            continue;
        }
        n = utf8_sequence((const unsigned char *)q, (const unsigned char *)d->end);
        if (n == 0) decode_error(d, q, "invalid UTF-8 in a string");
        q += n;
    }
    return q;
}

static unsigned hex4(const struct decoder *d, const char *q) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int c = q + i < d->end ? (unsigned char)q[i] : -1, h;
        if (c >= '0' && c <= '9') h = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') h = (c | 0x20) - 'a' + 10;
        else decode_error(d, q + i, "\\u must be followed by four hex digits");
        v = v << 4 | (unsigned)h;
    }
    return v;
}

static void add_utf8(luaL_Buffer *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F)),
        n = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3F)), u[2] = (char)(0x80 | (cp >> 6 & 0x3F)),
        u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    luaL_addlstring(b, u, n);
}

/* q at "\u": one code point, joining a surrogate pair. */
static const char *decode_unicode(const struct decoder *d, luaL_Buffer *b, const char *q) {
    unsigned cp = hex4(d, q + 2), low;
    const char *next = q + 6;

    if (cp >= 0xDC00 && cp <= 0xDFFF) decode_error(d, q, "lone low surrogate \\u%c%c%c%c", q[2], q[3], q[4], q[5]);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (d->end - next < 2 || next[0] != '\\' || next[1] != 'u')
            decode_error(d, q, "high surrogate \\u%c%c%c%c is not followed by a low surrogate", q[2], q[3], q[4], q[5]);
        low = hex4(d, next + 2);
        if (low < 0xDC00 || low > 0xDFFF) decode_error(d, next, "high surrogate is not followed by a low surrogate");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        next += 6;
    }
    add_utf8(b, cp);
    return next;
}

/* q at '\\': append what the escape means, return what follows it. */
static const char *decode_escape(const struct decoder *d, luaL_Buffer *b, const char *q) {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *hit;
    char buf[16];

    if (q + 1 >= d->end) decode_error(d, q, "unterminated string");
    if (q[1] == 'u') return decode_unicode(d, b, q);
    hit = q[1] ? strchr(from, q[1]) : NULL;
    if (!hit) decode_error(d, q, "invalid escape: '\\' followed by %s", describe_byte(d, q + 1, buf));
    luaL_addchar(b, to[hit - from]);
    return q + 2;
}

static void decode_string(struct decoder *d) {
    const char *open = d->p, *q = scan_plain(d, d->p + 1);
    luaL_Buffer b;

    if (q < d->end && *q == '"') { /* the common case: no escapes, no copy */
        lua_pushlstring(d->L, open + 1, (size_t)(q - open - 1));
        d->p = q + 1;
        return;
    }
    luaL_buffinit(d->L, &b);
    luaL_addlstring(&b, open + 1, (size_t)(q - open - 1));
    while (q < d->end && *q == '\\') {
        const char *run = decode_escape(d, &b, q);
        q = scan_plain(d, run);
        luaL_addlstring(&b, run, (size_t)(q - run));
    }
    if (q >= d->end) decode_error(d, open, "unterminated string");
    luaL_pushresult(&b);
    d->p = q + 1;
}

/* --- numbers */

static int is_digit(const struct decoder *d, const char *q) { return q < d->end && *q >= '0' && *q <= '9'; }

/* Push the integer literal [s, e) if it fits lua_Integer. */
static int push_integer(lua_State *L, const char *s, const char *e) {
    int neg = *s == '-';
    uint64_t u = 0, limit = (uint64_t)LUA_MAXINTEGER + (uint64_t)neg;

    for (const char *q = s + neg; q < e; q++) {
        unsigned digit = (unsigned)(*q - '0');
        if (u > (limit - digit) / 10) return 0;
        u = u * 10 + digit;
    }
    if (!neg) lua_pushinteger(L, (lua_Integer)u);
    else lua_pushinteger(L, u > (uint64_t)LUA_MAXINTEGER ? LUA_MININTEGER : -(lua_Integer)u);
    return 1;
}

/* Lua's own conversion: exact, and it copes with a locale whose decimal point is not '.'. */
static void push_float(const struct decoder *d, const char *s, const char *e) {
    char buf[64];
    size_t n = (size_t)(e - s), ok;
    if (n < sizeof buf) {
        memcpy(buf, s, n);
        buf[n] = '\0';
        ok = lua_stringtonumber(d->L, buf);
    } else {
        lua_pushlstring(d->L, s, n);
        ok = lua_stringtonumber(d->L, lua_tostring(d->L, -1));
        if (ok) lua_remove(d->L, -2);
    }
    if (!ok) decode_error(d, s, "number cannot be converted");
    if (lua_isinteger(d->L, -1)) lua_pushnumber(d->L, (lua_Number)lua_tointeger(d->L, -1)), lua_remove(d->L, -2);
}

static void decode_number(struct decoder *d) {
    const char *s = d->p, *q = s + (*s == '-');
    int is_float = 0;

    if (!is_digit(d, q)) d->p = q, expected(d, "a digit");
    if (*q == '0' && is_digit(d, q + 1)) decode_error(d, q, "leading zeros are not allowed");
    while (is_digit(d, q)) q++;
    if (q < d->end && *q == '.') {
        if (!is_digit(d, ++q)) d->p = q, expected(d, "a digit after '.'");
        while (is_digit(d, q)) q++;
        is_float = 1;
    }
    if (q < d->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < d->end && (*q == '+' || *q == '-')) q++;
        if (!is_digit(d, q)) d->p = q, expected(d, "a digit in the exponent");
        while (is_digit(d, q)) q++;
        is_float = 1;
    }
    d->p = q;
    if (is_float || !push_integer(d->L, s, q)) {
        if (!is_float && d->bigint_string) lua_pushlstring(d->L, s, (size_t)(q - s));
        else push_float(d, s, q);
    }
}

/* --- literals and containers */

static int match(struct decoder *d, const char *word, size_t n) {
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0) return 0;
    d->p += n;
    return 1;
}

static void decode_literal(struct decoder *d) {
    if (match(d, "true", 4)) lua_pushboolean(d->L, 1);
    else if (match(d, "false", 5)) lua_pushboolean(d->L, 0);
    else if (match(d, "null", 4)) lua_pushvalue(d->L, d->null_idx);
    else decode_error(d, d->p, "invalid literal (expected true, false or null)");
}

static void decode_object(struct decoder *d) {
    enter(d);
    lua_newtable(d->L);
    while (!peek(d, '}')) {
        if (!peek(d, '"')) expected(d, "a string key");
        decode_string(d);
        skip_space(d);
        if (!peek(d, ':')) expected(d, "':' after an object key");
        d->p++;
        decode_value(d);
        lua_rawset(d->L, -3);
        skip_space(d);
        if (peek(d, ',')) skip_comma(d, '}');
        else if (!peek(d, '}')) expected(d, "',' or '}' after an object member");
    }
    d->p++;
    d->depth--;
}

static void decode_array(struct decoder *d) {
    lua_Integer n = 0;
    enter(d);
    lua_newtable(d->L);
    lua_pushvalue(d->L, d->array_mt);
    lua_setmetatable(d->L, -2);
    while (!peek(d, ']')) {
        decode_value(d);
        lua_rawseti(d->L, -2, ++n);
        skip_space(d);
        if (peek(d, ',')) skip_comma(d, ']');
        else if (!peek(d, ']')) expected(d, "',' or ']' after an array element");
    }
    d->p++;
    d->depth--;
}

static void decode_value(struct decoder *d) {
    skip_space(d);
    if (d->p >= d->end) expected(d, "a value");
    switch (*d->p) {
    case '{':
        decode_object(d);
        break;
    case '[':
        decode_array(d);
        break;
    case '"':
        decode_string(d);
        break;
    case 't':
    case 'f':
    case 'n':
        decode_literal(d);
        break;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) decode_number(d);
        else expected(d, "a value");
    }
}

/* Runs under lua_pcall with the decoder as light userdata. [-0, +1, e] */
static int decode_protected(lua_State *L) {
    struct decoder *d = lua_touserdata(L, 1);
    char buf[16];

    d->L = L;
    json_push_null(L);
    d->null_idx = lua_gettop(L);
    json_push_array_mt(L);
    d->array_mt = lua_gettop(L);
    if (d->end - d->p >= 3 && memcmp(d->p, "\xEF\xBB\xBF", 3) == 0) d->p += 3;
    decode_value(d);
    skip_space(d);
    if (d->p < d->end) decode_error(d, d->p, "unexpected %s after the JSON value", describe_byte(d, d->p, buf));
    return 1;
}

/* Push the value, or the error message; returns the lua_pcall status. [-0, +1, -] */
static int decode_run(lua_State *L, const char *s, size_t n, int bigint_string) {
    struct decoder d = {.start = s, .p = s, .end = s + n, .bigint_string = bigint_string};
    lua_pushcfunction(L, decode_protected);
    lua_pushlightuserdata(L, &d);
    return lua_pcall(L, 1, 1, 0);
}

/* json_decode_lua of the reference decoder: pushes the value, or fills err. */
static int json_ref_decode_lua(lua_State *L, const char *s, size_t n, char *err, size_t errlen) {
    if (!lua_checkstack(L, 4)) {
        copy_error(err, errlen, "Lua stack exhausted");
        return 0;
    }
    if (decode_run(L, s, n, 0) == LUA_OK) return 1;
    copy_error(err, errlen, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
}
