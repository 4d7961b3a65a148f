/* fuzz_units: duration, ratio, byte-size, value and condition parsing (src/units.c) and
 * the playbook's threshold parsing on arbitrary bytes.
 *
 * The C parsers take (pointer, length) with no terminator: each runs on the whole input and
 * must stay inside it (ASan), give a finite result or an error, and a condition's signal
 * must be a slice of the input. promtext_parse_double (sample values and `le` labels) runs
 * too. Then the input goes where playbooks put such strings: a stage's hold, a threshold of
 * each unit, a trigger condition, through rollout.playbook.validate, which must return
 * errors rather than raise (FUZZ_STRICT_LUA=0 downgrades a raise to a printed line). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_FULL_HOST /* config and playbook load through the sandbox and its budget */
#include "fuzz_lua.h"
#include "rollout/promtext.h"
#include "rollout/stats.h"
#include "rollout/units.h"

static const fuzz_module modules[] = {
    {"rollout.units", luaopen_rollout_units},
    {"rollout.stats", luaopen_rollout_stats},
    {NULL, NULL},
};

static void check_number(int rc, double v, const char *err) {
    if (rc == 0 && isnan(v)) abort();
    if (rc != 0 && rc != -1) abort();
    if (rc != 0 && !err[0]) abort();
}

static void c_parsers(const char *s, size_t n) {
    char err[128];
    double v;
    int kind;
    err[0] = 0;
    check_number(units_duration(s, n, &v, err, sizeof err), v, err);
    if (units_duration(s, n, &v, NULL, 0) == 0 && !(v >= 0)) abort();
    err[0] = 0;
    check_number(units_ratio(s, n, &v, err, sizeof err), v, err);
    err[0] = 0;
    check_number(units_bytes(s, n, &v, err, sizeof err), v, err);
    err[0] = 0;
    int rc = units_value(s, n, &v, &kind, err, sizeof err);
    check_number(rc, v, err);
    if (rc == 0 && (kind < UNIT_NUMBER || kind > UNIT_BYTES)) abort();
    units_condition c;
    err[0] = 0;
    rc = units_parse_condition(s, n, &c, err, sizeof err);
    if (rc == 0) {
        if (c.signal < s || c.signal + c.signal_len > s + n || c.signal_len == 0) abort();
        if (strlen(c.op) < 1 || strlen(c.op) > 2) abort();
    } else if (!err[0]) {
        abort();
    }
    (void)promtext_parse_double(s, n, &v);
}

static const char *playbook_code =
    "local s = ...\n"
    "local units, playbook = require('rollout.units'), require('rollout.playbook')\n"
    "for _, kind in ipairs({'duration', 'ratio', 'bytes', 'value'}) do\n"
    "  local v, err = units.parse(kind, s)\n"
    "  assert(v ~= nil or type(err) == 'string', kind)\n"
    "end\n"
    "local raw = { name = 'fuzz', versions = { baseline = {}, canary = {} },\n"
    "  stages = { { weight = 10, hold = s, max_hold = s, thresholds = { error_rate = s, p99 = s } },\n"
    "             { weight = 100, hold = '1m' } },\n"
    "  thresholds = { error_rate = s, p99 = s, health = s, cpu = s, rps = s },\n"
    "  triggers = { t = { condition = s, duration = s, window = s } },\n"
    "  interval = s, gate_window = s }\n"
    "local pb, errs = playbook.validate(raw, { file = 'fuzz' })\n"
    "assert(pb or (type(errs) == 'table' and #errs > 0), 'no playbook and no error')\n";

static void lua_layers(lua_State *L, const char *s, size_t n) {
    static int ref = LUA_NOREF;
    static int strict = -1;
    if (strict < 0) strict = !(getenv("FUZZ_STRICT_LUA") && *getenv("FUZZ_STRICT_LUA") == '0');
    if (ref == LUA_NOREF) {
        if (luaL_loadstring(L, playbook_code) != LUA_OK) fuzz_lua_fail(L, "load");
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushlstring(L, s, n);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) return;
    if (strict) fuzz_lua_fail(L, "playbook validation raised");
    fprintf(stderr, "fuzz_units: Lua layer raised: %s\n", lua_tostring(L, -1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* libFuzzer's buffer is exactly `size` bytes: a read past the end is reported */
    c_parsers((const char *)data, size);
    if (size > 256) return 0; /* playbook values are short; keep the Lua part fast */
    lua_State *L = fuzz_lua(modules);
    lua_layers(L, (const char *)data, size);
    fuzz_lua_done(L);
    return 0;
}
