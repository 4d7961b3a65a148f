/* fuzz_promtext: the Prometheus text parser (src/promtext.c) on arbitrary bytes.
 *
 * Each input is parsed three ways: by the C parser with callbacks that read every byte they
 * are given (so ASan sees any slice that points outside the input or the scratch buffer),
 * by promtext.parse (the Lua tables a scrape builds) and by promtext.select (the
 * aggregation the sources use, with label matchers, a regex and a histogram grouped by a
 * label). The parser is reused across inputs as a scrape loop reuses it. Checked: the three
 * agree on success or failure (select may also refuse a bucket without a numeric `le`)
 * and on the number of samples; errors name a line within the
 * input; nothing raises. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_lua.h"
#include "rollout/promtext.h"

static const fuzz_module modules[] = {{"rollout.promtext", luaopen_rollout_promtext}, {NULL, NULL}};

struct walk {
    const char *buf;
    size_t len;
    size_t samples, families;
    unsigned sum;
};

static unsigned touch(promtext_str s) {
    unsigned h = 0;
    for (size_t i = 0; i < s.len; i++) h = h * 31 + (unsigned char)s.ptr[i];
    return h;
}

static int on_family(void *ud, const promtext_family *f) {
    struct walk *w = ud;
    if (f->name.len == 0 || f->index != w->families) abort();
    w->families++;
    w->sum += touch(f->name) + (f->help.ptr ? touch(f->help) : 0) + (unsigned)f->type;
    if (!promtext_type_name(f->type)) abort();
    return 0;
}

static int on_sample(void *ud, const promtext_sample *s) {
    struct walk *w = ud;
    if (!s->family || s->name.len == 0 || s->line == 0) abort();
    w->samples++;
    w->sum += touch(s->name);
    for (size_t i = 0; i < s->nlabels; i++) w->sum += touch(s->labels[i].name) + touch(s->labels[i].value);
    if (s->value == s->value) w->sum += (unsigned)(s->value > 0);
    return 0;
}

static size_t count_lines(const char *buf, size_t len) {
    size_t n = 1;
    for (size_t i = 0; i < len; i++) n += buf[i] == '\n';
    return n;
}

/* The selectors a prometheus/scrape source would pass, compiled once. [-0, +1, m] */
static void push_selectors(lua_State *L) {
    static int ref = LUA_NOREF;
    if (ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        return;
    }
    static const char *code =
        "return {"
        " {name = 'http_requests_total', labels = {code = {re = '5..'}}, group_by = 'version'},"
        " {name = 'up'},"
        " {name = 'x', labels = {a = {ne = ''}, b = {nre = 'x|y'}}},"
        " {histogram = 'http_request_duration_seconds', labels = {version = 'canary'}, group_by = 'le'},"
        " {histogram = 'rpc', group_by = 'job'},"
        "}";
    if (luaL_dostring(L, code) != LUA_OK) fuzz_lua_fail(L, "selectors");
    lua_pushvalue(L, -1);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static promtext_parser parser;
    static int init;
    if (!init) promtext_parser_init(&parser), init = 1;
    const char *buf = (const char *)data;

    struct walk w = {.buf = buf, .len = size};
    promtext_handler h = {on_family, on_sample, &w};
    promtext_error err;
    int rc = promtext_parse(&parser, buf, size, &h, &err);
    if (rc != PROMTEXT_OK && rc != PROMTEXT_ERROR) abort();
    if (rc == PROMTEXT_ERROR && (err.line == 0 || err.line > count_lines(buf, size) || !err.message[0])) abort();

    double d;
    if (size < 64) (void)promtext_parse_double(buf, size, &d);

    lua_State *L = fuzz_lua(modules);
    fuzz_require(L, "rollout.promtext");
    int mod = lua_gettop(L);

    lua_getfield(L, mod, "parse");
    lua_pushlstring(L, buf, size);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK) fuzz_lua_fail(L, "promtext.parse raised");
    if (lua_isnil(L, -2) != (rc != PROMTEXT_OK)) abort();
    if (rc == PROMTEXT_OK) {
        lua_getfield(L, -2, "nsamples");
        if (lua_tointeger(L, -1) != (lua_Integer)w.samples) abort();
        lua_pop(L, 1);
    }
    lua_pop(L, 2);

    lua_getfield(L, mod, "select");
    lua_pushlstring(L, buf, size);
    push_selectors(L);
    if (lua_pcall(L, 2, 2, 0) != LUA_OK) fuzz_lua_fail(L, "promtext.select raised");
    /* select also refuses a selected histogram bucket without a number in `le` */
    if (rc != PROMTEXT_OK && !lua_isnil(L, -2)) abort();
    if (rc == PROMTEXT_OK && lua_isnil(L, -2) && !strstr(lua_tostring(L, -1), "without a valid le label")) abort();

    fuzz_lua_done(L);
    return 0;
}
