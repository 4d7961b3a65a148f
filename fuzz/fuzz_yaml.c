/* fuzz_yaml: YAML playbook configuration loading on arbitrary bytes.
 *
 * Each input is loaded by the C API (yaml_load_lua: libyaml's events into Lua values, the
 * alias-bomb guard, tags, merge keys), then by yaml.load_all with line positions, and then
 * goes the whole way a `--config canary-config.yaml` goes: rollout.config.apply onto a
 * minimal playbook, and rollout.playbook.validate of the result. Checked: the C loader
 * either pushes one value or gives "name:line:col: message"; a loaded value encodes as JSON
 * unless it holds .nan/.inf (aliases share tables, they never make a cycle); the Lua layers
 * return errors instead of raising.
 *
 * A raise in the Lua layers (config.lua, playbook.lua) is a bug too (the first runs found
 * four in config.lua, fuzz/regressions/yaml/config-*): it is a crash. FUZZ_STRICT_LUA=0
 * prints each distinct message once instead and goes on, to fuzz the C past a known one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_FULL_HOST /* config and playbook load through the sandbox and its budget */
#include "fuzz_lua.h"
#include "rollout/json.h"
#include "rollout/stats.h"
#include "rollout/units.h"
#include "rollout/yaml.h"

static const fuzz_module modules[] = {
    {"rollout.yaml", luaopen_rollout_yaml},
    {"rollout.json", luaopen_rollout_json},
    {"rollout.units", luaopen_rollout_units},
    {"rollout.stats", luaopen_rollout_stats},
    {NULL, NULL},
};

/* The config path of `rollout run PLAYBOOK --config FILE`, reading FILE from the input. */
static const char *config_code =
    "local text = ...\n"
    "local yaml = require('rollout.yaml')\n"
    "local docs, lines = yaml.load_all(text, 'in.yaml', {lines = true})\n"
    "if not docs then assert(type(lines) == 'string' and lines:match('^in%.yaml:%d+:%d+: '), lines) end\n"
    "local load_file = yaml.load_file\n"
    "yaml.load_file = function(path, opts) return yaml.load(text, path, opts) end\n"
    "local ok, err = pcall(function()\n"
    "  local raw = { name = 'fuzz', versions = { baseline = { version = 'v1' }, canary = { version = 'v2' } },\n"
    "    stages = { { weight = 50, hold = '1m' }, { weight = 100, hold = '1m' } } }\n"
    "  local merged, errs = require('rollout.config').apply(raw, 'in.yaml')\n"
    "  if not merged then assert(type(errs) == 'table' and #errs > 0, 'apply: no value and no error') return end\n"
    "  merged.config_warnings = nil\n"
    "  local pb, perrs = require('rollout.playbook').validate(merged, { file = 'in.yaml' })\n"
    "  assert(pb or (type(perrs) == 'table' and #perrs > 0), 'validate: no playbook and no error')\n"
    "end)\n"
    "yaml.load_file = load_file\n"
    "if not ok then error(err, 0) end\n";

static void lua_layers(lua_State *L, const char *buf, size_t size) {
    static int ref = LUA_NOREF;
    static int strict = -1;
    if (strict < 0) strict = !(getenv("FUZZ_STRICT_LUA") && *getenv("FUZZ_STRICT_LUA") == '0');
    if (ref == LUA_NOREF) {
        if (luaL_loadstring(L, config_code) != LUA_OK) fuzz_lua_fail(L, "load");
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushlstring(L, buf, size);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) return;
    if (strict) fuzz_lua_fail(L, "config/playbook raised");
    /* report each distinct message once (a table in the registry) */
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.seen");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.seen");
    }
    lua_pushvalue(L, -2);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        fprintf(stderr, "fuzz_yaml: Lua layer raised: %s\n", lua_tostring(L, -3));
        lua_pushvalue(L, -3);
        lua_pushboolean(L, 1);
        lua_rawset(L, -4);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    lua_State *L = fuzz_lua(modules);
    char err[256];
    int top = lua_gettop(L);
    if (yaml_load_lua(L, buf, size, "in.yaml", err, sizeof err)) {
        if (lua_gettop(L) != top + 1) abort();
        if (!json_encode_lua(L, -1, JSON_ENCODE_SORT, err, sizeof err)) {
            if (!strcasestr(err, "inf") && !strcasestr(err, "nan")) {
                fprintf(stderr, "fuzz_yaml: a loaded value does not encode: %s\n", err);
                abort();
            }
        }
    } else {
        if (lua_gettop(L) != top) abort();
        if (strncmp(err, "in.yaml:", 8) != 0) {
            fprintf(stderr, "fuzz_yaml: error without a position: %s\n", err);
            abort();
        }
    }
    lua_settop(L, top);
    lua_layers(L, buf, size);
    fuzz_lua_done(L);
    return 0;
}
