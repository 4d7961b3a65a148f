/* json.c: the `json` namespace (require "rollout.json").
 *
 * json.decode(text [, opts]) -> value | nil, "line L column C: message"
 *   Strict RFC 8259: no comments, no trailing commas, no leading zeros, no control characters
 *   in strings, strings must be valid UTF-8, nothing but whitespace after the value. \uXXXX
 *   escapes become UTF-8 (a surrogate pair becomes one code point; a lone surrogate is an
 *   error; \u0000 gives a NUL byte). A UTF-8 byte order mark at the start is skipped.
 *   Numbers: a literal without '.' or exponent that fits int64 becomes a Lua integer, exactly
 *   (etcd lease ids ~1.7e17 are beyond 2^53 and survive); `1.0` and `1e3` become floats. An
 *   integer literal beyond int64 becomes the nearest float, or its digits as a string with
 *   opts.bigint = "string". A float beyond the double range becomes +-math.huge.
 *   null -> json.null, a unique userdata (tostring "null"; the same value as yaml.null), so a
 *   null member or array slot is kept. Arrays -> sequences with metatable json.array_mt;
 *   objects -> plain tables with string keys (for a repeated key the last one wins).
 *   Nesting deeper than JSON_MAX_DEPTH (512) is malformed input.
 *
 * json.encode(value [, opts]) -> string
 *   opts: sort = true (object keys in byte order, for deterministic output),
 *         indent = true | n (pretty: newlines and 2 or n spaces per level),
 *         non_finite = "error" | "null" (NaN and +-inf), invalid_utf8 = "error" | "replace".
 *   Tables: keys exactly 1..n, or the json.array_mt metatable -> array; string keys ->
 *   object; empty without the metatable -> {}. Integers print exactly; floats print with
 *   15, 16 or 17 significant digits, the fewest that read back to the same double, and
 *   always look like floats ("1.0"), so value and integer/float subtype both round-trip.
 *   Strings are bytes: `"`, `\` and control characters are escaped, valid UTF-8 passes
 *   through unchanged. json.null and nil encode as null. Tables are read raw (metamethods
 *   other than the json.array_mt mark are ignored).
 *
 * json.array([t]) -> t, marked with json.array_mt (so an empty t encodes as []).
 *
 * Errors: wrong argument types, unknown options and unencodable values raise: a function or
 * userdata, mixed or sparse keys, a cycle, NaN/inf, invalid UTF-8 (unless replaced); the
 * message names the path, e.g. "json.encode: cannot encode a function at $.a[3].b". Malformed
 * JSON text is input, not a bug: decode returns nil, err. Only memory errors escape decode.
 *
 * Decoding: the text is checked by our own strict scan, then parsed by cJSON
 * (cJSON_ParseWithLengthOpts, allocating through rollout.alloc); see "decoder" below.
 * The encoder is ours: cJSON cannot sort keys (and its strings stop at a NUL byte).
 */
#include "rollout/json.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rollout/alloc.h"

#define NULL_KEY "rollout.json.null_value" /* registry: the one json.null userdata */
#define NULL_MT "rollout.json.null"
#define ARRAY_MT "rollout.json.array"
#define STRBUF_MT "rollout.json.strbuf"
#define DECODING_MT "rollout.json.decoding"

/* lua_error does not return; this tells the compiler so. */
static _Noreturn void raise_error(lua_State *L) {
    lua_error(L);
    abort();
}

static void copy_error(char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "%s", msg ? msg : "unknown error");
}

/* ------------------------------------------------------------------ shared values */

/* __tostring of json.null [-0, +1, m] */
static int l_null_tostring(lua_State *L) {
    lua_pushliteral(L, "null");
    return 1;
}

void json_push_null(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY) == LUA_TUSERDATA) return;
    lua_pop(L, 1);
    lua_newuserdatauv(L, 0, 0);
    if (luaL_newmetatable(L, NULL_MT)) {
        lua_pushcfunction(L, l_null_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, NULL_KEY);
}

int json_is_null(lua_State *L, int idx) {
    int is_null;
    idx = lua_absindex(L, idx);
    json_push_null(L);
    is_null = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    return is_null;
}

void json_push_array_mt(lua_State *L) {
    luaL_newmetatable(L, ARRAY_MT); /* sets __name, so tostring shows "rollout.json.array: 0x..." */
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

/* Options tables: an unknown key is an error naming the key. */
static void check_option_names(lua_State *L, int idx, const char *fn, const char *const names[]) {
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int known = 0;
        lua_pop(L, 1);
        for (int i = 0; names[i] && !known; i++)
            known = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), names[i]) == 0;
        if (!known) luaL_error(L, "%s: unknown option '%s'", fn, luaL_tolstring(L, -1, NULL));
    }
}

/* The index of opts[key] in choices (choices[0] when absent). */
static int option_choice(lua_State *L, int idx, const char *fn, const char *key, const char *const choices[]) {
    int found = 0;
    if (lua_getfield(L, idx, key) != LUA_TNIL) {
        const char *v = lua_tostring(L, -1);
        for (found = 0; choices[found]; found++)
            if (v && lua_type(L, -1) == LUA_TSTRING && strcmp(v, choices[found]) == 0) break;
        if (!choices[found]) luaL_error(L, "%s: option %s must be \"%s\" or \"%s\"", fn, key, choices[0], choices[1]);
    }
    lua_pop(L, 1);
    return found;
}

/* ------------------------------------------------------------------ decoder */

/* Decoding is two passes. scan() checks the text against RFC 8259 (cJSON alone accepts
 * leading zeros, "1.", control characters as whitespace and in strings, invalid UTF-8 and
 * trailing bytes, and its error pointer says neither what it expected nor, at the end of
 * the input, where), so every error is ours and positioned exactly; on the way it marks the
 * integer literals (cJSON keeps only a double) and the strings holding \u0000 (cJSON's are
 * NUL-terminated). cJSON_ParseWithLengthOpts then parses the checked text, and push_item
 * turns its tree into Lua values, reading the marked tokens from the source text. */

/* A token scan() marked: the ordinal among the numbers (or strings) of the text, in
 * document order (the order push_item meets them), and where it is in the text. */
struct mark {
    size_t ordinal;
    const char *s;
    size_t len;
};

struct marks {
    struct mark *v;
    size_t n, cap, next; /* next: the first mark push_item has not reached */
};

/* What lives outside the Lua heap's reach while a decode runs: a to-be-closed userdata, so
 * an error (a memory error while building the Lua values) frees it as well. */
struct chunk;

struct decoding {
    cJSON *tree;          /* in chunks */
    struct chunk *chunks; /* the arena, newest first */
    struct marks ints, nul_strings;
    char *copy; /* the text with over-long numbers blanked for cJSON, when there are any */
    size_t copy_len;
};

struct decoder {
    lua_State *L;
    const char *start, *p, *end;
    const char *text; /* what cJSON parses: the input after a UTF-8 BOM */
    int depth;
    int bigint_string;
    int null_idx, array_mt; /* stack slots holding json.null and json.array_mt */
    struct decoding *dec;
    size_t nnumbers, nstrings;
    int string_has_nul, long_numbers;
    int oom; /* cJSON could not allocate */
};

/* cJSON's allocations come from the running decode's arena: chunks from the host's
 * allocator (so they count against the memory limit and rollout.alloc's budgets), released
 * all at once when the decode ends. A node per value through malloc and free cost more than
 * the parse itself. Only the decoder calls cJSON; outside a decode its malloc fails. */
struct chunk {
    struct chunk *prev;
    size_t size, used;
    max_align_t data[];
};

static struct decoding *arena_owner; /* the decode cJSON is parsing for, or NULL */

static void *cjson_malloc(size_t n) {
    struct chunk *c = arena_owner ? arena_owner->chunks : NULL;
    size_t align = sizeof(max_align_t), want = (n + align - 1) / align * align;

    if (!arena_owner) return NULL;
    if (!c || c->size - c->used < want) {
        size_t size = c ? c->size * 2 : 64 * 1024;
        if (size > 16 * 1024 * 1024) size = 16 * 1024 * 1024;
        if (size < want) size = want;
        struct chunk *fresh = alloc_lua(NULL, NULL, 0, sizeof *fresh + size);
        if (!fresh) return NULL;
        *fresh = (struct chunk){.prev = c, .size = size};
        arena_owner->chunks = c = fresh;
    }
    c->used += want;
    return (char *)c->data + c->used - want;
}

static void cjson_free(void *q) { (void)q; /* the arena goes as a whole */ }

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

/* q at "\u": one code point, joining a surrogate pair; b NULL: check only. */
static const char *decode_unicode(struct decoder *d, luaL_Buffer *b, const char *q) {
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
    if (cp == 0) d->string_has_nul = 1;
    if (b) add_utf8(b, cp);
    return next;
}

/* q at '\\': append what the escape means (b NULL: check only), return what follows it. */
static const char *decode_escape(struct decoder *d, luaL_Buffer *b, const char *q) {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *hit;
    char buf[16];

    if (q + 1 >= d->end) decode_error(d, q, "unterminated string");
    if (q[1] == 'u') return decode_unicode(d, b, q);
    hit = q[1] ? strchr(from, q[1]) : NULL;
    if (!hit) decode_error(d, q, "invalid escape: '\\' followed by %s", describe_byte(d, q + 1, buf));
    if (b) luaL_addchar(b, to[hit - from]);
    return q + 2;
}

/* Push the string token at d->p, decoded from the text (scan() checked it). */
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

/* --- literals */

static int match(struct decoder *d, const char *word, size_t n) {
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0) return 0;
    d->p += n;
    return 1;
}

/* --- the check: scan() */

/* Note a token for push_item. [-0, +0, m] */
static void add_mark(struct decoder *d, struct marks *m, size_t ordinal, const char *s, size_t len) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct mark *v = alloc_lua(NULL, m->v, m->cap * sizeof *v, cap * sizeof *v);
        if (!v) d->oom = 1, luaL_error(d->L, "not enough memory");
        m->v = v, m->cap = cap;
    }
    m->v[m->n++] = (struct mark){.ordinal = ordinal, .s = s, .len = len};
}

static void scan_string(struct decoder *d) {
    const char *open = d->p, *q = scan_plain(d, d->p + 1);

    d->string_has_nul = 0;
    while (q < d->end && *q == '\\') q = scan_plain(d, decode_escape(d, NULL, q));
    if (q >= d->end) decode_error(d, open, "unterminated string");
    if (d->string_has_nul) add_mark(d, &d->dec->nul_strings, d->nstrings, open, (size_t)(q + 1 - open));
    d->nstrings++;
    d->p = q + 1;
}

/* cJSON reads at most 63 characters of a number; a longer one is blanked in its copy. */
#define CJSON_NUMBER_MAX 63

static void scan_number(struct decoder *d) {
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
    if ((size_t)(q - s) > CJSON_NUMBER_MAX) d->long_numbers = 1;
    /* integers, and floats too long for cJSON, are read from the text: len marks a float */
    if (!is_float || (size_t)(q - s) > CJSON_NUMBER_MAX)
        add_mark(d, &d->dec->ints, d->nnumbers, s, is_float ? 0 : (size_t)(q - s));
    d->nnumbers++;
}

static void scan_literal(struct decoder *d) {
    if (!match(d, "true", 4) && !match(d, "false", 5) && !match(d, "null", 4))
        decode_error(d, d->p, "invalid literal (expected true, false or null)");
}

/* The whole text against RFC 8259, without recursion: the open containers are a stack of
 * '[' and '{' at most JSON_MAX_DEPTH deep. Raises the first error. */
static void scan(struct decoder *d) {
    char open[JSON_MAX_DEPTH + 1];
    char buf[16];

    skip_space(d);
value:
    if (d->p >= d->end) expected(d, "a value");
    switch (*d->p) {
    case '{':
    case '[':
        open[d->depth] = *d->p; /* enter() checks the depth before it is used */
        enter(d);
        if (peek(d, open[d->depth - 1] == '[' ? ']' : '}')) {
            d->p++, d->depth--;
            break;
        }
        if (open[d->depth - 1] == '[') goto value;
        goto key;
    case '"':
        scan_string(d);
        break;
    case 't':
    case 'f':
    case 'n':
        scan_literal(d);
        break;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) scan_number(d);
        else expected(d, "a value");
    }
after_value:
    skip_space(d);
    if (d->depth == 0) {
        if (d->p < d->end) decode_error(d, d->p, "unexpected %s after the JSON value", describe_byte(d, d->p, buf));
        return;
    }
    if (open[d->depth - 1] == '[') {
        if (peek(d, ',')) {
            skip_comma(d, ']');
            goto value;
        }
        if (!peek(d, ']')) expected(d, "',' or ']' after an array element");
    } else {
        if (peek(d, ',')) {
            skip_comma(d, '}');
            goto key;
        }
        if (!peek(d, '}')) expected(d, "',' or '}' after an object member");
    }
    d->p++, d->depth--;
    goto after_value;
key:
    if (!peek(d, '"')) expected(d, "a string key");
    scan_string(d);
    skip_space(d);
    if (!peek(d, ':')) expected(d, "':' after an object key");
    d->p++;
    skip_space(d);
    goto value;
}

/* --- the values: cJSON's tree to Lua */

/* The next number (ordinal n): from the text when marked, else cJSON's double. */
static void push_number(struct decoder *d, const cJSON *item, size_t n) {
    struct marks *m = &d->dec->ints;
    const struct mark *k;

    if (m->next >= m->n || m->v[m->next].ordinal != n) {
        lua_pushnumber(d->L, (lua_Number)item->valuedouble);
        return;
    }
    k = &m->v[m->next++];
    if (k->len == 0) { /* a float longer than cJSON reads */
        const char *e = k->s;
        while (e < d->end && strchr("+-.0123456789eE", *e)) e++;
        push_float(d, k->s, e);
    } else if (!push_integer(d->L, k->s, k->s + k->len)) {
        if (d->bigint_string) lua_pushlstring(d->L, k->s, k->len);
        else push_float(d, k->s, k->s + k->len);
    }
}

/* A string (ordinal n) cJSON decoded: from the text when it holds a NUL. */
static void push_string(struct decoder *d, const char *s, size_t n) {
    struct marks *m = &d->dec->nul_strings;
    if (m->next < m->n && m->v[m->next].ordinal == n) {
        d->p = m->v[m->next++].s;
        decode_string(d);
    } else {
        lua_pushstring(d->L, s);
    }
}

/* Push item's value; numbers and strings are counted in document order. [-0, +1, m] */
static void push_item(struct decoder *d, const cJSON *item) {
    lua_Integer i = 0;

    switch (item->type & 0xFF) {
    case cJSON_False:
        lua_pushboolean(d->L, 0);
        return;
    case cJSON_True:
        lua_pushboolean(d->L, 1);
        return;
    case cJSON_NULL:
        lua_pushvalue(d->L, d->null_idx);
        return;
    case cJSON_Number:
        push_number(d, item, d->nnumbers++);
        return;
    case cJSON_String:
        push_string(d, item->valuestring, d->nstrings++);
        return;
    case cJSON_Array:
        luaL_checkstack(d->L, 4, "JSON nesting");
        lua_newtable(d->L);
        lua_pushvalue(d->L, d->array_mt);
        lua_setmetatable(d->L, -2);
        for (const cJSON *c = item->child; c; c = c->next) {
            push_item(d, c);
            lua_rawseti(d->L, -2, ++i);
        }
        return;
    case cJSON_Object:
        luaL_checkstack(d->L, 4, "JSON nesting");
        lua_newtable(d->L);
        for (const cJSON *c = item->child; c; c = c->next) {
            push_string(d, c->string, d->nstrings++);
            push_item(d, c);
            lua_rawset(d->L, -3);
        }
        return;
    default:
        luaL_error(d->L, "json.decode: cJSON returned an item of type %d", item->type);
    }
}

/* __close and __gc of the decoding state. [-0, +0, -] */
static int l_decoding_free(lua_State *L) {
    struct decoding *dec = luaL_checkudata(L, 1, DECODING_MT);
    for (struct chunk *c = dec->chunks, *prev; c; c = prev) { /* the tree lives in the arena */
        prev = c->prev;
        alloc_lua(NULL, c, sizeof *c + c->size, 0);
    }
    alloc_lua(NULL, dec->ints.v, dec->ints.cap * sizeof *dec->ints.v, 0);
    alloc_lua(NULL, dec->nul_strings.v, dec->nul_strings.cap * sizeof *dec->nul_strings.v, 0);
    alloc_lua(NULL, dec->copy, dec->copy_len, 0);
    memset(dec, 0, sizeof *dec);
    return 0;
}

/* The text cJSON parses: the input, or a copy with every number longer than cJSON reads
 * replaced by 0 and spaces (push_number reads those from the input). */
static const char *cjson_text(struct decoder *d, size_t *len) {
    struct decoding *dec = d->dec;
    *len = (size_t)(d->end - d->text);
    if (!d->long_numbers) return d->text;
    dec->copy = alloc_lua(NULL, NULL, 0, *len);
    if (!dec->copy) d->oom = 1, luaL_error(d->L, "not enough memory");
    dec->copy_len = *len;
    memcpy(dec->copy, d->text, *len);
    for (size_t i = 0; i < dec->ints.n; i++) {
        const struct mark *k = &dec->ints.v[i];
        char *s = dec->copy + (k->s - d->text);
        size_t n = 0;
        while (k->s + n < d->end && strchr("+-.0123456789eE", k->s[n])) n++;
        if (n > CJSON_NUMBER_MAX) memset(s, ' ', n), s[0] = '0';
    }
    return dec->copy;
}

/* Runs under lua_pcall with the decoder as light userdata. [-0, +1, e] */
static int decode_protected(lua_State *L) {
    struct decoder *d = lua_touserdata(L, 1);
    const char *text, *parse_end = NULL;
    size_t len;

    d->L = L;
    json_push_null(L);
    d->null_idx = lua_gettop(L);
    json_push_array_mt(L);
    d->array_mt = lua_gettop(L);
    d->dec = lua_newuserdatauv(L, sizeof *d->dec, 0);
    memset(d->dec, 0, sizeof *d->dec);
    luaL_setmetatable(L, DECODING_MT);
    lua_toclose(L, -1);
    /* Columns count a BOM, as editors do not. cJSON gets the text after it: it skips a BOM
     * itself only when two more bytes follow ("\xEF\xBB\xBF" "4" failed). */
    if (d->end - d->p >= 3 && memcmp(d->p, "\xEF\xBB\xBF", 3) == 0) d->p += 3;
    d->text = d->p;
    scan(d);
    text = cjson_text(d, &len);
    arena_owner = d->dec;
    d->dec->tree = cJSON_ParseWithLengthOpts(text, len, &parse_end, 0);
    arena_owner = NULL;
    if (!d->dec->tree) { /* scan() accepted it, so only memory can have failed */
        d->oom = 1;
        return luaL_error(L, "not enough memory");
    }
    d->nnumbers = d->nstrings = 0;
    push_item(d, d->dec->tree);
    return 1; /* returning closes the decoding state */
}

/* Push the value, or the error message; returns the lua_pcall status. [-0, +1, -] */
static int decode_run(lua_State *L, const char *s, size_t n, int bigint_string) {
    struct decoder d = {.start = s, .p = s, .end = s + n, .bigint_string = bigint_string};
    int status;
    lua_pushcfunction(L, decode_protected);
    lua_pushlightuserdata(L, &d);
    status = lua_pcall(L, 1, 1, 0);
    return d.oom && status == LUA_ERRRUN ? LUA_ERRMEM : status;
}

int json_decode_lua(lua_State *L, const char *s, size_t n, char *err, size_t errlen) {
    if (!lua_checkstack(L, 4)) {
        copy_error(err, errlen, "Lua stack exhausted");
        return 0;
    }
    if (decode_run(L, s, n, 0) == LUA_OK) return 1;
    copy_error(err, errlen, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
}

/* json.decode(text [, opts]) -> value | nil, err [-0, +1|2, e] */
static int l_json_decode(lua_State *L) {
    static const char *const names[] = {"bigint", NULL};
    static const char *const bigint[] = {"float", "string", NULL};
    int bigint_string = 0, status;
    const char *s;
    size_t n;

    luaL_checktype(L, 1, LUA_TSTRING);
    s = lua_tolstring(L, 1, &n);
    if (!lua_isnoneornil(L, 2)) {
        check_option_names(L, 2, "json.decode", names);
        bigint_string = option_choice(L, 2, "json.decode", "bigint", bigint);
    }
    status = decode_run(L, s, n, bigint_string);
    if (status == LUA_OK) return 1;
    if (status != LUA_ERRRUN) /* out of memory: not the input's fault */
        return lua_error(L);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* ------------------------------------------------------------------ encoder */

struct strbuf {
    char *p;
    size_t n, cap;
};

/* __gc of the encoder's buffer, which a raised error abandons. [-0, +0, -] */
static int l_strbuf_gc(lua_State *L) {
    struct strbuf *b = lua_touserdata(L, 1);
    free(b->p);
    b->p = NULL;
    return 0;
}

static struct strbuf *strbuf_new(lua_State *L) {
    struct strbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    if (luaL_newmetatable(L, STRBUF_MT)) {
        lua_pushcfunction(L, l_strbuf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

struct path_step {
    const char *key; /* NULL: an array index */
    size_t len;
    lua_Integer index;
};

struct encoder {
    lua_State *L;
    struct strbuf *b;
    int sort, indent, non_finite_null, replace_utf8;
    int visiting, null_idx, array_mt; /* stack slots */
    int depth, nsteps;
    struct path_step path[JSON_MAX_DEPTH + 1];
};

static void encode_value(struct encoder *e, int idx);

static int is_identifier(const char *s, size_t n) {
    if (n == 0 || (s[0] >= '0' && s[0] <= '9')) return 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '_' || (s[i] >= '0' && s[i] <= '9') || ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z'))) return 0;
    return 1;
}

/* "$.a[3].b" for the value being encoded. [-0, +1, m] */
static void push_path(const struct encoder *e) {
    luaL_Buffer b;
    char num[32];
    luaL_buffinit(e->L, &b);
    luaL_addchar(&b, '$');
    for (int i = 0; i < e->nsteps; i++) {
        const struct path_step *s = &e->path[i];
        if (!s->key) {
            snprintf(num, sizeof num, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)s->index);
            luaL_addstring(&b, num);
        } else if (is_identifier(s->key, s->len)) {
            luaL_addchar(&b, '.');
            luaL_addlstring(&b, s->key, s->len);
        } else {
            luaL_addstring(&b, "[\"");
            luaL_addlstring(&b, s->key, s->len);
            luaL_addstring(&b, "\"]");
        }
    }
    luaL_pushresult(&b);
}

/* Raise "file:line: json.encode: <message> at $.path". */
static _Noreturn void encode_error(struct encoder *e, const char *fmt, ...) {
    va_list ap;
    luaL_where(e->L, 1);
    lua_pushliteral(e->L, "json.encode: ");
    va_start(ap, fmt);
    lua_pushvfstring(e->L, fmt, ap);
    va_end(ap);
    lua_pushliteral(e->L, " at ");
    push_path(e);
    lua_concat(e->L, 5);
    raise_error(e->L);
}

static char *reserve(struct encoder *e, size_t extra) {
    struct strbuf *b = e->b;
    size_t cap;
    char *p;
    if (b->p && b->cap - b->n >= extra) return b->p + b->n;
    for (cap = b->cap ? b->cap : 256; cap - b->n < extra; cap *= 2)
        if (cap > SIZE_MAX / 4) encode_error(e, "output too large");
    p = realloc(b->p, cap);
    if (!p) encode_error(e, "out of memory");
    b->p = p;
    b->cap = cap;
    return b->p + b->n;
}

static void put(struct encoder *e, const void *s, size_t n) {
    memcpy(reserve(e, n), s, n);
    e->b->n += n;
}

static void put_char(struct encoder *e, char c) {
    *reserve(e, 1) = c;
    e->b->n++;
}

#define put_literal(e, s) put((e), "" s, sizeof(s) - 1)

/* Pretty output: a line break and the indentation for `depth` levels. */
static void newline(struct encoder *e, int depth) {
    char *p;
    size_t n = (size_t)e->indent * (size_t)depth;
    if (!e->indent) return;
    p = reserve(e, n + 1);
    *p = '\n';
    memset(p + 1, ' ', n);
    e->b->n += n + 1;
}

/* --- scalars */

/* The first of %.15g, %.16g, %.17g that reads back to v, made to look like a float. */
static size_t format_double(char buf[64], double v) {
    int n = 0;
    for (int precision = 15; precision <= 17; precision++) {
        n = snprintf(buf, 64, "%.*g", precision, v);
        if (strtod(buf, NULL) == v) break;
    }
    for (int i = 0; i < n; i++)
        if (buf[i] == ',') /* a locale's decimal comma */
            buf[i] = '.';
    if (strspn(buf, "-0123456789") == (size_t)n) buf[n++] = '.', buf[n++] = '0', buf[n] = '\0';
    return (size_t)n;
}

static void encode_number(struct encoder *e, int idx) {
    char buf[64];
    double v;
    if (lua_isinteger(e->L, idx)) {
        int n = snprintf(buf, sizeof buf, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(e->L, idx));
        put(e, buf, (size_t)n);
        return;
    }
    v = (double)lua_tonumber(e->L, idx);
    if (isfinite(v)) put(e, buf, format_double(buf, v));
    else if (e->non_finite_null) put_literal(e, "null");
    else encode_error(e, "cannot encode %s (use non_finite = \"null\")", isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf");
}

static void put_escape(struct encoder *e, unsigned char c) {
    static const char from[] = "\"\\\b\f\n\r\t", to[] = "\"\\bfnrt";
    const char *hit = c ? strchr(from, c) : NULL;
    char buf[8];
    if (hit) {
        put_char(e, '\\');
        put_char(e, to[hit - from]);
    } else {
        snprintf(buf, sizeof buf, "\\u%04x", c);
        put(e, buf, 6);
    }
}

static void put_string(struct encoder *e, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
    put_char(e, '"');
    while (p < end) {
        size_t k;
        if (*p >= 0x20 && *p != '"' && *p != '\\' && *p < 0x80) {
            p++;
            continue;
        }
        if (*p >= 0x80 && (k = utf8_sequence(p, end)) > 0) {
            p += k;
            continue;
        }
        put(e, run, (size_t)(p - run));
        if (*p < 0x80) put_escape(e, *p);
        else if (e->replace_utf8) put_literal(e, "\xEF\xBF\xBD");
        else encode_error(e, "invalid UTF-8 in a string (use invalid_utf8 = \"replace\")");
        run = ++p;
    }
    put(e, run, (size_t)(p - run));
    put_char(e, '"');
}

/* --- tables */

static void step_index(struct encoder *e, lua_Integer i) {
    e->path[e->depth - 1] = (struct path_step){NULL, 0, i};
    e->nsteps = e->depth;
}

static void step_key(struct encoder *e, const char *key, size_t len) {
    e->path[e->depth - 1] = (struct path_step){key, len, 0};
    e->nsteps = e->depth;
}

static void enter_table(struct encoder *e, int idx) {
    lua_State *L = e->L;
    if (e->depth >= JSON_MAX_DEPTH) encode_error(e, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    if (!lua_checkstack(L, 8)) encode_error(e, "nesting too deep for the Lua stack");
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->visiting) != LUA_TNIL) encode_error(e, "cycle: the table contains itself");
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, e->visiting);
    e->depth++;
}

static void leave_table(struct encoder *e, int idx) {
    lua_pushvalue(e->L, idx);
    lua_pushnil(e->L);
    lua_rawset(e->L, e->visiting);
    e->depth--;
    e->nsteps = e->depth;
}

static int has_array_mt(struct encoder *e, int idx) {
    int marked;
    if (!lua_getmetatable(e->L, idx)) return 0;
    marked = lua_rawequal(e->L, -1, e->array_mt);
    lua_pop(e->L, 1);
    return marked;
}

/* Smallest missing index of a sparse integer-keyed table. */
static lua_Integer first_hole(lua_State *L, int idx) {
    lua_Integer i = 1;
    while (lua_rawgeti(L, idx, i) != LUA_TNIL) lua_pop(L, 1), i++;
    lua_pop(L, 1);
    return i;
}

/* Array (returns its length n >= 0) or object (returns -1 - count); raises on bad keys. */
static lua_Integer table_shape(struct encoder *e, int idx) {
    lua_State *L = e->L;
    lua_Integer ints = 0, max = 0, strings = 0;
    int marked = has_array_mt(e, idx);

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            if (ints || marked)
                encode_error(e, "string key \"%s\" in %s", lua_tostring(L, -1),
                             marked ? "a json.array" : "a table with integer keys (mixed keys)");
            strings++;
        } else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            if (strings)
                encode_error(e, "integer key %I in a table with string keys (mixed keys)",
                             (LUAI_UACINT)lua_tointeger(L, -1));
            ints++;
            if (lua_tointeger(L, -1) > max) max = lua_tointeger(L, -1);
        } else {
            const char *type = luaL_typename(L, -1);
            encode_error(e, "key %s (%s) cannot be encoded: keys must be strings or integers 1..n",
                         luaL_tolstring(L, -1, NULL), type);
        }
    }
    if (ints != max)
        encode_error(e, "sparse array: index %I is missing (highest index %I)", (LUAI_UACINT)first_hole(L, idx),
                     (LUAI_UACINT)max);
    return strings || (!ints && !marked) ? -1 - strings : ints;
}

static void encode_array(struct encoder *e, int idx, lua_Integer n) {
    put_char(e, '[');
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) put_char(e, ',');
        newline(e, e->depth);
        step_index(e, i);
        lua_rawgeti(e->L, idx, i);
        encode_value(e, lua_gettop(e->L));
        lua_pop(e->L, 1);
    }
    if (n) newline(e, e->depth - 1);
    put_char(e, ']');
}

/* key and value are absolute stack indices; key is a string. */
static void encode_member(struct encoder *e, int key, int value, int first) {
    size_t n;
    const char *k = lua_tolstring(e->L, key, &n);
    if (!first) put_char(e, ',');
    newline(e, e->depth);
    step_key(e, k, n);
    put_string(e, k, n);
    put_char(e, ':');
    if (e->indent) put_char(e, ' ');
    encode_value(e, value);
}

static void encode_object(struct encoder *e, int idx) {
    lua_State *L = e->L;
    int first = 1;
    put_char(e, '{');
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int top = lua_gettop(L);
        encode_member(e, top - 1, top, first);
        lua_pop(L, 1);
        first = 0;
    }
    if (!first) newline(e, e->depth - 1);
    put_char(e, '}');
}

struct key_ref {
    const char *s;
    size_t n;
};

static int key_compare(const void *a, const void *b) {
    const struct key_ref *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* The key strings stay alive: the table being encoded holds them. */
static void encode_object_sorted(struct encoder *e, int idx, lua_Integer count) {
    lua_State *L = e->L;
    struct key_ref *keys = lua_newuserdatauv(L, (size_t)count * sizeof *keys + 1, 0);
    lua_Integer i = 0;

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        keys[i].s = lua_tolstring(L, -1, &keys[i].n);
        i++;
    }
    qsort(keys, (size_t)count, sizeof *keys, key_compare);
    put_char(e, '{');
    for (i = 0; i < count; i++) {
        int top;
        lua_pushlstring(L, keys[i].s, keys[i].n);
        lua_pushvalue(L, -1);
        lua_rawget(L, idx);
        top = lua_gettop(L);
        encode_member(e, top - 1, top, i == 0);
        lua_pop(L, 2);
    }
    if (count) newline(e, e->depth - 1);
    put_char(e, '}');
    lua_pop(L, 1);
}

static void encode_table(struct encoder *e, int idx) {
    lua_Integer shape;
    enter_table(e, idx);
    shape = table_shape(e, idx);
    if (shape >= 0) encode_array(e, idx, shape);
    else if (e->sort) encode_object_sorted(e, idx, -1 - shape);
    else encode_object(e, idx);
    leave_table(e, idx);
}

static void encode_value(struct encoder *e, int idx) {
    lua_State *L = e->L;
    int type = lua_type(L, idx);
    if (type == LUA_TNIL || (type == LUA_TUSERDATA && lua_rawequal(L, idx, e->null_idx))) put_literal(e, "null");
    else if (type == LUA_TBOOLEAN && lua_toboolean(L, idx)) put_literal(e, "true");
    else if (type == LUA_TBOOLEAN) put_literal(e, "false");
    else if (type == LUA_TNUMBER) encode_number(e, idx);
    else if (type == LUA_TSTRING) put_string(e, lua_tostring(L, idx), lua_rawlen(L, idx));
    else if (type == LUA_TTABLE) encode_table(e, idx);
    else encode_error(e, "cannot encode a %s", luaL_typename(L, idx));
}

/* Encode the value at idx; replaces nothing, pushes the text. [-0, +1, e] */
static void encode_run(lua_State *L, struct encoder *e, int idx) {
    int base;
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 8, "json.encode");
    e->L = L;
    e->b = strbuf_new(L);
    base = lua_gettop(L);
    lua_newtable(L);
    e->visiting = lua_gettop(L);
    json_push_null(L);
    e->null_idx = lua_gettop(L);
    json_push_array_mt(L);
    e->array_mt = lua_gettop(L);
    encode_value(e, idx);
    lua_pushlstring(L, e->b->p, e->b->n);
    free(e->b->p);
    e->b->p = NULL;
    lua_replace(L, base);
    lua_settop(L, base);
}

static void encode_options(lua_State *L, int idx, struct encoder *e) {
    static const char *const names[] = {"sort", "indent", "non_finite", "invalid_utf8", NULL};
    static const char *const non_finite[] = {"error", "null", NULL};
    static const char *const invalid_utf8[] = {"error", "replace", NULL};

    check_option_names(L, idx, "json.encode", names);
    lua_getfield(L, idx, "sort");
    e->sort = lua_toboolean(L, -1);
    lua_getfield(L, idx, "indent");
    if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0 && lua_tointeger(L, -1) <= 16)
        e->indent = (int)lua_tointeger(L, -1);
    else if (lua_isboolean(L, -1) || lua_isnil(L, -1)) e->indent = lua_toboolean(L, -1) ? 2 : 0;
    else luaL_error(L, "json.encode: option indent must be a boolean or an integer 0..16");
    lua_pop(L, 2);
    e->non_finite_null = option_choice(L, idx, "json.encode", "non_finite", non_finite);
    e->replace_utf8 = option_choice(L, idx, "json.encode", "invalid_utf8", invalid_utf8);
}

/* json.encode(value [, opts]) -> string [-0, +1, e] */
static int l_json_encode(lua_State *L) {
    struct encoder e = {0};
    luaL_checkany(L, 1);
    if (!lua_isnoneornil(L, 2)) encode_options(L, 2, &e);
    encode_run(L, &e, 1);
    return 1;
}

/* Runs under lua_pcall: (lightuserdata encoder, value) -> text. [-0, +1, e] */
static int encode_protected(lua_State *L) {
    encode_run(L, lua_touserdata(L, 1), 2);
    return 1;
}

int json_encode_lua(lua_State *L, int idx, int flags, char *err, size_t errlen) {
    struct encoder e = {0};
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 4)) {
        copy_error(err, errlen, "Lua stack exhausted");
        return 0;
    }
    e.sort = (flags & JSON_ENCODE_SORT) != 0;
    e.indent = (flags & JSON_ENCODE_INDENT) ? 2 : 0;
    lua_pushcfunction(L, encode_protected);
    lua_pushlightuserdata(L, &e);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 2, 1, 0) == LUA_OK) return 1;
    copy_error(err, errlen, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
}

/* json.array([t]) -> t with json.array_mt [-0, +1, e] */
static int l_json_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    json_push_array_mt(L);
    if (lua_getmetatable(L, 1) && !lua_rawequal(L, -1, -2))
        return luaL_error(L, "json.array: the table already has a metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

static const luaL_Reg json_functions[] = {
    {"decode", l_json_decode},
    {"encode", l_json_encode},
    {"array", l_json_array},
    {NULL, NULL},
};

/* require "rollout.json" [-0, +1, m] */
int luaopen_rollout_json(lua_State *L) {
    static cJSON_Hooks hooks = {.malloc_fn = cjson_malloc, .free_fn = cjson_free};
    cJSON_InitHooks(&hooks);
    if (luaL_newmetatable(L, DECODING_MT)) {
        lua_pushcfunction(L, l_decoding_free);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, l_decoding_free);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, json_functions);
    json_push_null(L);
    lua_setfield(L, -2, "null");
    json_push_array_mt(L);
    lua_setfield(L, -2, "array_mt");
    return 1;
}
