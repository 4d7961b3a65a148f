/* yaml.c: the `yaml` namespace (require "rollout.yaml"), built on libyaml's event parser.
 *
 * yaml.load(text [, name] [, opts])     -> value [, lines] | nil, "name:line:col: message"
 * yaml.load_all(text [, name] [, opts]) -> {doc, ...} [, lines] | nil, err
 * yaml.load_file(path [, opts])         -> value [, lines] | nil, err
 *   name defaults to "<string>"; load_file uses the path. yaml.load returns the first
 *   document and does not read past it; an empty stream gives yaml.null.
 *   opts: lines = true      also return `lines`, see below;
 *         max_nodes = n     the alias-bomb guard (default 1e6): the number of nodes the
 *                           documents hold when every alias is expanded.
 *
 * Values (YAML 1.2 core schema). Plain (unquoted) scalars:
 *   null Null NULL ~ and empty         -> yaml.null (the same value as json.null)
 *   true True TRUE false False FALSE   -> boolean (yes/no/on/off stay strings)
 *   [-+]?[0-9]+  0o[0-7]+  0x[0-9a-fA-F]+  -> integer (beyond int64: the nearest float)
 *   [-+]?(.N|N[.N])([eE][-+]?N), [-+]?.inf, .nan (and their capitalised forms) -> float
 *   anything else (5m, 80%, v2.9.0, ${DEPLOY_ID}) -> string
 * Quoted and block scalars are strings. Tags: ! !!str !!timestamp -> string; !!int !!float
 * !!bool !!null convert (and fail on a value that is not one); !!map !!seq; any other tag is
 * an error. Nulls are yaml.null everywhere, also as mapping values: `key:` keeps its key, and
 * sequences have no holes. Sequences carry json.array_mt (yaml.array_mt), so they encode as
 * JSON arrays even when empty. Mapping keys are always strings, the key's text (`200:` gives
 * "200"); a repeated key and a non-scalar key are errors. `<<` merge keys (YAML 1.1, common
 * in configs) copy the keys of a mapping or a list of mappings that are not already set.
 * An alias is the anchored Lua value itself, not a copy: tables are shared.
 *
 * Positions: with opts.lines, a second result `lines` maps each decoded table to
 * {key -> line}: the 1-based line of each mapping key, or of each sequence item (key = its
 * index). Keys merged through `<<` report the line where the merged mapping wrote them.
 *     local cfg, lines = yaml.load_file("canary.yaml", {lines = true})
 *     lines[cfg.spec].stages  --> 17
 *
 * Errors: wrong argument types and unknown options raise. Malformed YAML, a bad tagged value,
 * a repeated key, an undefined alias, nesting deeper than 512 and too many nodes are input
 * errors: nil, "name:line:col: message". An unreadable file gives nil, "path: reason".
 * Out of memory raises. load_file reads synchronously: it is for config files at startup.
 */
#include "rollout/yaml.h"

#include "rollout/json.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define CORE_TAG "tag:yaml.org,2002:"
#define FILE_BOX_MT "rollout.yaml.file"
#define DEFAULT_NAME "<string>"

struct loader {
    lua_State *L;
    yaml_parser_t parser;
    yaml_event_t event;
    int has_event, out_of_memory;
    const char *name, *text;
    size_t len;
    int want_lines, all;
    lua_Integer nodes, max_nodes;
    int depth;
    int null_idx, array_mt, anchors, sizes, lines; /* stack slots */
};

static lua_Integer load_node(struct loader *ld);

/* lua_error does not return; this tells the compiler so. */
static _Noreturn void raise_error(lua_State *L) {
    lua_error(L);
    abort();
}

/* Raise "name:line:col: message"; loading runs protected, so the caller gets nil, err. */
static _Noreturn void load_error(struct loader *ld, yaml_mark_t mark, const char *fmt, ...) {
    va_list ap;
    lua_pushfstring(ld->L, "%s:%I:%I: ", ld->name, (LUAI_UACINT)mark.line + 1, (LUAI_UACINT)mark.column + 1);
    va_start(ap, fmt);
    lua_pushvfstring(ld->L, fmt, ap);
    va_end(ap);
    lua_concat(ld->L, 2);
    raise_error(ld->L);
}

/* libyaml reports reader errors (bad UTF-8, control characters) as a byte offset. */
static yaml_mark_t mark_at_offset(const struct loader *ld, size_t offset) {
    yaml_mark_t mark = {offset, 0, 0};
    for (size_t i = 0; i < offset && i < ld->len; i++)
        if (ld->text[i] == '\n') mark.line++, mark.column = 0;
        else mark.column++;
    return mark;
}

static _Noreturn void parser_error(struct loader *ld) {
    yaml_parser_t *p = &ld->parser;
    yaml_mark_t mark = p->problem_mark;

    if (p->error == YAML_MEMORY_ERROR) {
        ld->out_of_memory = 1;
        lua_pushliteral(ld->L, "yaml: out of memory");
        raise_error(ld->L);
    }
    if (p->error == YAML_READER_ERROR) mark = mark_at_offset(ld, p->problem_offset);
    if (p->context)
        load_error(ld, mark, "%s (%s at line %I)", p->problem ? p->problem : "syntax error", p->context,
                   (LUAI_UACINT)p->context_mark.line + 1);
    load_error(ld, mark, "%s", p->problem ? p->problem : "syntax error");
}

static void next_event(struct loader *ld) {
    if (ld->has_event) yaml_event_delete(&ld->event);
    ld->has_event = 0;
    if (!yaml_parser_parse(&ld->parser, &ld->event)) parser_error(ld);
    ld->has_event = 1;
}

static void count_nodes(struct loader *ld, lua_Integer n, yaml_mark_t mark) {
    ld->nodes += n;
    if (ld->nodes > ld->max_nodes)
        load_error(ld, mark, "more than %I nodes with aliases expanded (alias bomb? see max_nodes)",
                   (LUAI_UACINT)ld->max_nodes);
}

/* ------------------------------------------------------------------ scalars */

static int text_is(const char *s, size_t n, const char *word) { return strlen(word) == n && memcmp(s, word, n) == 0; }

static int is_null_text(const char *s, size_t n) {
    return n == 0 || text_is(s, n, "~") || text_is(s, n, "null") || text_is(s, n, "Null") || text_is(s, n, "NULL");
}

/* 1 true, 0 false, -1 neither */
static int bool_text(const char *s, size_t n) {
    if (text_is(s, n, "true") || text_is(s, n, "True") || text_is(s, n, "TRUE")) return 1;
    if (text_is(s, n, "false") || text_is(s, n, "False") || text_is(s, n, "FALSE")) return 0;
    return -1;
}

static int digit_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
    return 99;
}

static int all_digits(const char *s, size_t n, int base) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (digit_value(s[i]) >= base) return 0;
    return 1;
}

/* The base of an integer in the core schema (10, 8 for 0o, 16 for 0x), or 0. */
static int int_base(const char *s, size_t n) {
    size_t sign = n > 0 && (s[0] == '-' || s[0] == '+');
    if (n > 2 && s[0] == '0' && s[1] == 'o' && all_digits(s + 2, n - 2, 8)) return 8;
    if (n > 2 && s[0] == '0' && s[1] == 'x' && all_digits(s + 2, n - 2, 16)) return 16;
    return all_digits(s + sign, n - sign, 10) ? 10 : 0;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int is_float_text(const char *s, size_t n) {
    size_t i = 0, mantissa = 0, exponent = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, mantissa++;
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) mantissa++;
    if (mantissa == 0) return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, exponent++;
        if (exponent == 0) return 0;
    }
    return i == n;
}

static int special_float(const char *s, size_t n, double *v) {
    double sign = n > 0 && s[0] == '-' ? -1.0 : 1.0;
    size_t skip = n > 0 && (s[0] == '-' || s[0] == '+');
    const char *p = s + skip;
    size_t m = n - skip;
    if (text_is(p, m, ".inf") || text_is(p, m, ".Inf") || text_is(p, m, ".INF")) return *v = sign * HUGE_VAL, 1;
    if (!skip && (text_is(p, m, ".nan") || text_is(p, m, ".NaN") || text_is(p, m, ".NAN"))) return *v = NAN, 1;
    return 0;
}

/* 0o / 0x: Lua's own hex conversion wraps around, so count here; overflow gives a float. */
static void push_radix(lua_State *L, const char *s, size_t n, int base) {
    uint64_t u = 0;
    double f = 0;
    int overflow = 0;
    for (size_t i = 2; i < n; i++) {
        int d = digit_value(s[i]);
        f = f * base + d;
        if (u > ((uint64_t)LUA_MAXINTEGER - (uint64_t)d) / (uint64_t)base) overflow = 1;
        else u = u * (uint64_t)base + (uint64_t)d;
    }
    if (overflow) lua_pushnumber(L, (lua_Number)f);
    else lua_pushinteger(L, (lua_Integer)u);
}

/* s is NUL-terminated and already matched the core schema's grammar, which Lua's own
 * conversion accepts (exactly, in any locale; decimal overflow becomes a float). */
static void push_decimal(lua_State *L, const char *s, int as_float) {
    if (!lua_stringtonumber(L, s)) lua_pushnumber(L, (lua_Number)strtod(s, NULL));
    if (as_float && lua_isinteger(L, -1)) {
        lua_Number v = (lua_Number)lua_tointeger(L, -1);
        lua_pop(L, 1);
        lua_pushnumber(L, v);
    }
}

static void push_int(lua_State *L, const char *s, size_t n, int base) {
    if (base == 10) push_decimal(L, s, 0);
    else push_radix(L, s, n, base);
}

static void resolve_plain(struct loader *ld, const char *s, size_t n) {
    lua_State *L = ld->L;
    int b, base;
    double v;
    if (is_null_text(s, n)) lua_pushvalue(L, ld->null_idx);
    else if ((b = bool_text(s, n)) >= 0) lua_pushboolean(L, b);
    else if ((base = int_base(s, n)) != 0) push_int(L, s, n, base);
    else if (is_float_text(s, n)) push_decimal(L, s, 1);
    else if (special_float(s, n, &v)) lua_pushnumber(L, (lua_Number)v);
    else lua_pushlstring(L, s, n);
}

/* Push the value of a scalar with an explicit tag; 0 when it does not fit the tag. */
static int resolve_core_tag(struct loader *ld, const char *type, const char *s, size_t n) {
    lua_State *L = ld->L;
    int b, base;
    double v;
    if (strcmp(type, "str") == 0 || strcmp(type, "timestamp") == 0) lua_pushlstring(L, s, n);
    else if (strcmp(type, "null") == 0 && is_null_text(s, n)) lua_pushvalue(L, ld->null_idx);
    else if (strcmp(type, "bool") == 0 && (b = bool_text(s, n)) >= 0) lua_pushboolean(L, b);
    else if (strcmp(type, "int") == 0 && (base = int_base(s, n)) != 0) push_int(L, s, n, base);
    else if (strcmp(type, "float") == 0 && (int_base(s, n) == 10 || is_float_text(s, n))) push_decimal(L, s, 1);
    else if (strcmp(type, "float") == 0 && special_float(s, n, &v)) lua_pushnumber(L, (lua_Number)v);
    else return 0;
    return 1;
}

static int is_scalar_type(const char *type) {
    static const char *const types[] = {"str", "timestamp", "null", "bool", "int", "float", NULL};
    for (int i = 0; types[i]; i++)
        if (strcmp(type, types[i]) == 0) return 1;
    return 0;
}

static int is_core_tag(const char *tag) { return strncmp(tag, CORE_TAG, sizeof CORE_TAG - 1) == 0; }

static void push_scalar(struct loader *ld) {
    const yaml_event_t *ev = &ld->event;
    const char *tag = (const char *)ev->data.scalar.tag;
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;

    if (!tag && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) resolve_plain(ld, s, n);
    else if (!tag || strcmp(tag, "!") == 0) lua_pushlstring(ld->L, s, n);
    else if (!is_core_tag(tag)) load_error(ld, ev->start_mark, "unsupported tag %s", tag);
    else if (!is_scalar_type(tag + sizeof CORE_TAG - 1))
        load_error(ld, ev->start_mark, "unsupported tag !!%s", tag + sizeof CORE_TAG - 1);
    else if (!resolve_core_tag(ld, tag + sizeof CORE_TAG - 1, s, n))
        load_error(ld, ev->start_mark, "invalid !!%s value '%s'", tag + sizeof CORE_TAG - 1, s);
}

/* ------------------------------------------------------------------ anchors */

/* The anchor's name (or nil) in a slot, since the event that names it will be gone. */
static int push_anchor(struct loader *ld, const yaml_char_t *anchor) {
    if (anchor) lua_pushstring(ld->L, (const char *)anchor);
    else lua_pushnil(ld->L);
    return lua_gettop(ld->L);
}

/* anchors[name] = the value on top, sizes[name] = its expanded node count. */
static void remember_anchor(struct loader *ld, int name, lua_Integer size) {
    lua_State *L = ld->L;
    if (lua_isnil(L, name)) return;
    lua_pushvalue(L, name);
    lua_pushvalue(L, -2);
    lua_rawset(L, ld->anchors);
    lua_pushvalue(L, name);
    lua_pushinteger(L, size);
    lua_rawset(L, ld->sizes);
}

static lua_Integer load_scalar(struct loader *ld) {
    int name = push_anchor(ld, ld->event.data.scalar.anchor);
    count_nodes(ld, 1, ld->event.start_mark);
    push_scalar(ld);
    remember_anchor(ld, name, 1);
    lua_remove(ld->L, name);
    return 1;
}

static lua_Integer load_alias(struct loader *ld) {
    lua_State *L = ld->L;
    const char *name = (const char *)ld->event.data.alias.anchor;
    lua_Integer size;
    if (lua_getfield(L, ld->sizes, name) == LUA_TNIL) load_error(ld, ld->event.start_mark, "undefined alias *%s", name);
    size = lua_tointeger(L, -1);
    lua_pop(L, 1);
    count_nodes(ld, size, ld->event.start_mark);
    lua_getfield(L, ld->anchors, name);
    return size;
}

/* ------------------------------------------------------------------ collections */

static void enter(struct loader *ld) {
    if (++ld->depth > YAML_MAX_DEPTH)
        load_error(ld, ld->event.start_mark, "nesting deeper than %d levels", YAML_MAX_DEPTH);
    if (!lua_checkstack(ld->L, 12)) load_error(ld, ld->event.start_mark, "nesting too deep for the Lua stack");
    count_nodes(ld, 1, ld->event.start_mark);
}

static void check_collection_tag(struct loader *ld, const yaml_char_t *tag, const char *type) {
    const char *t = (const char *)tag;
    if (t && strcmp(t, "!") != 0 && !(is_core_tag(t) && strcmp(t + sizeof CORE_TAG - 1, type) == 0))
        load_error(ld, ld->event.start_mark, "unsupported tag %s%s on a %s", is_core_tag(t) ? "!!" : "",
                   is_core_tag(t) ? t + sizeof CORE_TAG - 1 : t, strcmp(type, "seq") == 0 ? "sequence" : "mapping");
}

/* A {key -> line} table for this collection, or nil. */
static int push_positions(struct loader *ld) {
    if (ld->want_lines) lua_newtable(ld->L);
    else lua_pushnil(ld->L);
    return lua_gettop(ld->L);
}

/* positions[key on top] = line of the current event; pops nothing. */
static void record_line(struct loader *ld, int positions) {
    if (lua_isnil(ld->L, positions)) return;
    lua_pushvalue(ld->L, -1);
    lua_pushinteger(ld->L, (lua_Integer)ld->event.start_mark.line + 1);
    lua_rawset(ld->L, positions);
}

/* Stack: name t positions ... -> t; registers positions and the anchor. */
static void finish_collection(struct loader *ld, int name, int t, int positions, lua_Integer size) {
    lua_State *L = ld->L;
    if (!lua_isnil(L, positions)) {
        lua_pushvalue(L, t);
        lua_pushvalue(L, positions);
        lua_rawset(L, ld->lines);
    }
    lua_settop(L, t);
    remember_anchor(ld, name, size);
    lua_remove(L, name);
    ld->depth--;
}

static lua_Integer load_sequence(struct loader *ld) {
    lua_State *L = ld->L;
    lua_Integer n = 0, size = 1;
    int name, t, positions;

    check_collection_tag(ld, ld->event.data.sequence_start.tag, "seq");
    enter(ld);
    name = push_anchor(ld, ld->event.data.sequence_start.anchor);
    lua_newtable(L);
    t = lua_gettop(L);
    lua_pushvalue(L, ld->array_mt);
    lua_setmetatable(L, t);
    positions = push_positions(ld);
    for (next_event(ld); ld->event.type != YAML_SEQUENCE_END_EVENT; next_event(ld)) {
        lua_pushinteger(L, n + 1);
        record_line(ld, positions);
        lua_pop(L, 1);
        size += load_node(ld);
        lua_rawseti(L, t, ++n);
    }
    finish_collection(ld, name, t, positions, size);
    return size;
}

/* Push the key's text; 1 when it is the merge key `<<`. */
static int load_key(struct loader *ld) {
    lua_State *L = ld->L;
    const yaml_event_t *ev = &ld->event;

    if (ev->type == YAML_ALIAS_EVENT) {
        load_alias(ld);
        if (lua_istable(L, -1)) load_error(ld, ev->start_mark, "mapping keys must be scalars");
        luaL_tolstring(L, -1, NULL);
        lua_remove(L, -2);
        return 0;
    }
    if (ev->type != YAML_SCALAR_EVENT) load_error(ld, ev->start_mark, "mapping keys must be scalars");
    if (ev->data.scalar.anchor) { /* the anchor names the key's typed value */
        load_scalar(ld);
        lua_pop(L, 1);
    } else {
        count_nodes(ld, 1, ev->start_mark);
    }
    lua_pushlstring(L, (const char *)ev->data.scalar.value, ev->data.scalar.length);
    return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag &&
           text_is((const char *)ev->data.scalar.value, ev->data.scalar.length, "<<");
}

static int is_mapping(struct loader *ld, int idx) {
    int seq;
    if (!lua_istable(ld->L, idx)) return 0;
    if (!lua_getmetatable(ld->L, idx)) return 1;
    seq = lua_rawequal(ld->L, -1, ld->array_mt);
    lua_pop(ld->L, 1);
    return !seq;
}

/* The value on top goes to the merge list in slot `merges`; checked now, applied at the end. */
static void add_merge(struct loader *ld, int merges, yaml_mark_t mark) {
    lua_State *L = ld->L;
    int ok = is_mapping(ld, -1);
    if (!ok && lua_istable(L, -1)) { /* a list of mappings */
        lua_Integer i = 1;
        ok = 1;
        while (ok && lua_rawgeti(L, -1, i++) != LUA_TNIL) ok = is_mapping(ld, -1), lua_pop(L, 1);
        if (ok) lua_pop(L, 1); /* the nil that ended the list */
    }
    if (!ok) load_error(ld, mark, "<< must be followed by a mapping or a list of mappings");
    if (lua_isnil(L, merges)) {
        lua_newtable(L);
        lua_replace(L, merges);
    }
    lua_rawseti(L, merges, (lua_Integer)lua_rawlen(L, merges) + 1);
}

/* Copy src's keys that t lacks, with their lines. */
static void merge_one(struct loader *ld, int t, int src, int positions) {
    lua_State *L = ld->L;
    int src_lines;
    if (lua_istable(L, ld->lines)) {
        lua_pushvalue(L, src);
        lua_rawget(L, ld->lines);
    } else {
        lua_pushnil(L);
    }
    src_lines = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, src)) {
        lua_pushvalue(L, -2);
        if (lua_rawget(L, t) == LUA_TNIL) {
            lua_pushvalue(L, -3);
            lua_pushvalue(L, -3);
            lua_rawset(L, t);
            if (lua_istable(L, src_lines) && !lua_isnil(L, positions)) {
                lua_pushvalue(L, -3);
                lua_pushvalue(L, -1);
                lua_rawget(L, src_lines);
                lua_rawset(L, positions);
            }
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

static void apply_merges(struct loader *ld, int t, int merges, int positions) {
    lua_State *L = ld->L;
    if (lua_isnil(L, merges)) return;
    for (lua_Integer i = 1; lua_rawgeti(L, merges, i) != LUA_TNIL; i++) {
        int src = lua_gettop(L);
        if (is_mapping(ld, src)) merge_one(ld, t, src, positions);
        else
            for (lua_Integer j = 1; lua_rawgeti(L, src, j) != LUA_TNIL; j++)
                merge_one(ld, t, lua_gettop(L), positions), lua_pop(L, 1);
        lua_settop(L, src - 1);
    }
    lua_pop(L, 1);
}

static lua_Integer load_mapping(struct loader *ld) {
    lua_State *L = ld->L;
    lua_Integer size = 1;
    int name, t, positions, merges;

    check_collection_tag(ld, ld->event.data.mapping_start.tag, "map");
    enter(ld);
    name = push_anchor(ld, ld->event.data.mapping_start.anchor);
    lua_newtable(L);
    t = lua_gettop(L);
    positions = push_positions(ld);
    lua_pushnil(L);
    merges = lua_gettop(L);
    for (next_event(ld); ld->event.type != YAML_MAPPING_END_EVENT; next_event(ld)) {
        yaml_mark_t key_mark = ld->event.start_mark;
        int is_merge = load_key(ld);
        if (!is_merge) {
            lua_pushvalue(L, -1);
            if (lua_rawget(L, t) != LUA_TNIL) load_error(ld, key_mark, "duplicate key '%s'", lua_tostring(L, -2));
            lua_pop(L, 1);
            record_line(ld, positions);
        }
        next_event(ld);
        size += load_node(ld);
        if (is_merge) add_merge(ld, merges, key_mark), lua_pop(L, 1);
        else lua_rawset(L, t);
    }
    apply_merges(ld, t, merges, positions);
    finish_collection(ld, name, t, positions, size);
    return size;
}

/* Push the node of the current event; returns its size with aliases expanded. */
static lua_Integer load_node(struct loader *ld) {
    switch (ld->event.type) {
    case YAML_SCALAR_EVENT:
        return load_scalar(ld);
    case YAML_ALIAS_EVENT:
        return load_alias(ld);
    case YAML_SEQUENCE_START_EVENT:
        return load_sequence(ld);
    case YAML_MAPPING_START_EVENT:
        return load_mapping(ld);
    default:
        load_error(ld, ld->event.start_mark, "unexpected parser event %d", (int)ld->event.type);
    }
}

/* ------------------------------------------------------------------ documents */

static void reset_anchors(struct loader *ld) {
    lua_newtable(ld->L);
    lua_replace(ld->L, ld->anchors);
    lua_newtable(ld->L);
    lua_replace(ld->L, ld->sizes);
}

static void push_lines_table(struct loader *ld) {
    if (!ld->want_lines) {
        lua_pushnil(ld->L);
        return;
    }
    lua_newtable(ld->L);
    lua_createtable(ld->L, 0, 1);
    lua_pushliteral(ld->L, "k");
    lua_setfield(ld->L, -2, "__mode");
    lua_setmetatable(ld->L, -2);
}

/* Runs under lua_pcall with the loader as light userdata: -> value|documents, lines|nil.
 * [-0, +2, e] */
static int load_protected(lua_State *L) {
    struct loader *ld = lua_touserdata(L, 1);
    lua_Integer n = 0;
    int docs;

    ld->L = L;
    json_push_null(L);
    ld->null_idx = lua_gettop(L);
    json_push_array_mt(L);
    ld->array_mt = lua_gettop(L);
    lua_newtable(L);
    ld->anchors = lua_gettop(L);
    lua_newtable(L);
    ld->sizes = lua_gettop(L);
    push_lines_table(ld);
    ld->lines = lua_gettop(L);
    lua_newtable(L);
    docs = lua_gettop(L);
    lua_pushvalue(L, ld->array_mt);
    lua_setmetatable(L, docs);

    next_event(ld); /* stream start */
    for (next_event(ld); ld->event.type == YAML_DOCUMENT_START_EVENT && (ld->all || n == 0); next_event(ld)) {
        reset_anchors(ld);
        next_event(ld);
        load_node(ld);
        lua_rawseti(L, docs, ++n);
        next_event(ld); /* document end */
    }
    if (ld->all) lua_pushvalue(L, docs);
    else if (n == 0) lua_pushvalue(L, ld->null_idx);
    else lua_rawgeti(L, docs, 1);
    lua_pushvalue(L, ld->lines);
    return 2;
}

/* Push value and lines (or the error message); returns the lua_pcall status. */
static int load_run(lua_State *L, struct loader *ld) {
    int status;
    if (!yaml_parser_initialize(&ld->parser)) return luaL_error(L, "yaml: out of memory");
    yaml_parser_set_input_string(&ld->parser, (const unsigned char *)ld->text, ld->len);
    lua_pushcfunction(L, load_protected);
    lua_pushlightuserdata(L, ld);
    status = lua_pcall(L, 1, 2, 0);
    if (ld->has_event) yaml_event_delete(&ld->event);
    yaml_parser_delete(&ld->parser);
    return status;
}

int yaml_load_lua(lua_State *L, const char *s, size_t n, const char *name, char *err, size_t errlen) {
    struct loader ld = {.name = name ? name : DEFAULT_NAME, .text = s, .len = n, .max_nodes = YAML_DEFAULT_MAX_NODES};
    int status;
    if (!lua_checkstack(L, 12)) {
        if (err && errlen) snprintf(err, errlen, "Lua stack exhausted");
        return 0;
    }
    status = load_run(L, &ld);
    if (status == LUA_OK) {
        lua_pop(L, 1);
        return 1;
    }
    if (err && errlen) snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_pop(L, 1);
    return 0;
}

/* ------------------------------------------------------------------ bindings */

static lua_Integer positive_integer(lua_State *L, int idx, const char *fn, const char *key) {
    int ok;
    lua_Integer n = lua_tointegerx(L, idx, &ok);
    if (!ok || n <= 0) luaL_error(L, "%s: option %s must be a positive integer", fn, key);
    return n;
}

static void read_options(lua_State *L, int idx, struct loader *ld, const char *fn) {
    ld->max_nodes = YAML_DEFAULT_MAX_NODES;
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strcmp(key, "lines") == 0) ld->want_lines = lua_toboolean(L, -1);
        else if (strcmp(key, "max_nodes") == 0) ld->max_nodes = positive_integer(L, -1, fn, key);
        else luaL_error(L, "%s: unknown option '%s'", fn, luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
}

/* value [, lines] | nil, err [-1|2, +1|2, e] */
static int load_results(lua_State *L, struct loader *ld, int status) {
    if (status == LUA_OK) {
        if (!ld->want_lines) lua_pop(L, 1);
        return ld->want_lines ? 2 : 1;
    }
    if (status != LUA_ERRRUN || ld->out_of_memory) return lua_error(L);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* (text [, name] [, opts]) for load and load_all */
static int load_string(lua_State *L, int all, const char *fn) {
    struct loader ld = {.all = all, .name = DEFAULT_NAME};
    int opts = lua_istable(L, 2) ? 2 : 3;
    luaL_checktype(L, 1, LUA_TSTRING);
    ld.text = lua_tolstring(L, 1, &ld.len);
    if (opts == 3) ld.name = luaL_optstring(L, 2, DEFAULT_NAME);
    read_options(L, opts, &ld, fn);
    lua_settop(L, 3);
    return load_results(L, &ld, load_run(L, &ld));
}

/* yaml.load(text [, name] [, opts]) -> value [, lines] | nil, err [-0, +1|2, e] */
static int l_yaml_load(lua_State *L) { return load_string(L, 0, "yaml.load"); }

/* yaml.load_all(text [, name] [, opts]) -> {doc, ...} [, lines] | nil, err [-0, +1|2, e] */
static int l_yaml_load_all(lua_State *L) { return load_string(L, 1, "yaml.load_all"); }

/* __gc of the box holding load_file's FILE, should a memory error unwind past it.  [-0, +0, -] */
static int l_file_box_gc(lua_State *L) {
    FILE **f = lua_touserdata(L, 1);
    if (*f) fclose(*f);
    *f = NULL;
    return 0;
}

/* Push the file's contents, or nil and "path: reason". Returns 1 on success. [-0, +1|2, m] */
static int read_whole_file(lua_State *L, const char *path) {
    FILE **f = lua_newuserdatauv(L, sizeof *f, 0);
    luaL_Buffer b;
    size_t got;
    int failed, saved;

    *f = NULL;
    if (luaL_newmetatable(L, FILE_BOX_MT)) {
        lua_pushcfunction(L, l_file_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *f = fopen(path, "rb");
    if (!*f) {
        saved = errno;
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(saved));
        return 0;
    }
    luaL_buffinit(L, &b);
    do {
        got = fread(luaL_prepbuffer(&b), 1, LUAL_BUFFERSIZE, *f);
        luaL_addsize(&b, got);
    } while (got == LUAL_BUFFERSIZE);
    failed = ferror(*f), saved = errno;
    fclose(*f);
    *f = NULL;
    luaL_pushresult(&b);
    lua_remove(L, -2);
    if (!failed) return 1;
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(saved));
    return 0;
}

/* yaml.load_file(path [, opts]) -> value [, lines] | nil, err [-0, +1|2, e] */
static int l_yaml_load_file(lua_State *L) {
    struct loader ld = {.name = luaL_checkstring(L, 1)};
    read_options(L, 2, &ld, "yaml.load_file");
    lua_settop(L, 2);
    if (!read_whole_file(L, ld.name)) return 2;
    ld.text = lua_tolstring(L, 3, &ld.len);
    return load_results(L, &ld, load_run(L, &ld));
}

static const luaL_Reg yaml_functions[] = {
    {"load", l_yaml_load},
    {"load_all", l_yaml_load_all},
    {"load_file", l_yaml_load_file},
    {NULL, NULL},
};

/* require "rollout.yaml" [-0, +1, m] */
int luaopen_rollout_yaml(lua_State *L) {
    luaL_newlib(L, yaml_functions);
    json_push_null(L);
    lua_setfield(L, -2, "null");
    json_push_array_mt(L);
    lua_setfield(L, -2, "array_mt");
    return 1;
}
