/* fuzz_json: JSON decoding of API responses (src/json.c) on arbitrary bytes.
 *
 * Every input is decoded by the C API (json_decode_lua), as the Prometheus, Alertmanager,
 * etcd and Kubernetes clients decode response bodies. What decodes must re-encode and
 * round-trip: encode(decode(x)) with sorted keys is a fixed point of decode-then-encode,
 * and the only value the encoder may refuse is a number the decoder turned into +-inf
 * (a literal beyond the double range). The Lua binding is driven as well, with
 * bigint = "string" and a pretty encoding. Nothing may raise but a memory error.
 * Differential: the decoder parses through cJSON after its own strict scan; json_ref.c is
 * the hand-written decoder it replaced, and both must give the same value (compared as
 * sorted encodings by src/json.c's encoder, which keep integer/float apart) or the same
 * error message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_lua.h"
#include "json_ref.c"
#include "rollout/json.h"

static const fuzz_module modules[] = {{"rollout.json", luaopen_rollout_json}, {NULL, NULL}};

/* Encode the value on top (sorted) and pop it; push the text, or nothing when the value
 * holds a non-finite number. Returns 1 when a text was pushed. */
static int encode_top(lua_State *L) {
    char err[256];
    int ok = json_encode_lua(L, -1, JSON_ENCODE_SORT, err, sizeof err);
    lua_remove(L, ok ? -2 : -1);
    if (ok) return 1;
    if (!strstr(err, "cannot encode inf") && !strstr(err, "cannot encode -inf")) {
        fprintf(stderr, "fuzz_json: a decoded value does not encode: %s\n", err);
        abort();
    }
    return 0;
}

/* The value or error of one decoder, as text: "ok <sorted encoding>", "ok inf" or "error <msg>". */
static void outcome(lua_State *L, int ok, const char *err) {
    char e2[256];
    if (!ok) {
        lua_pushfstring(L, "error %s", err);
        return;
    }
    if (!json_encode_lua(L, -1, JSON_ENCODE_SORT, e2, sizeof e2)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "ok inf");
        return;
    }
    lua_pushliteral(L, "ok ");
    lua_insert(L, -2);
    lua_concat(L, 2);
    lua_remove(L, -2);
}

static void differential(lua_State *L, const char *buf, size_t size) {
    char err[256], ref_err[256];
    outcome(L, json_decode_lua(L, buf, size, err, sizeof err), err);
    outcome(L, json_ref_decode_lua(L, buf, size, ref_err, sizeof ref_err), ref_err);
    size_t n1, n2;
    const char *a = lua_tolstring(L, -2, &n1), *b = lua_tolstring(L, -1, &n2);
    if (n1 != n2 || memcmp(a, b, n1) != 0) {
        fprintf(stderr, "fuzz_json: cJSON decoder and reference differ:\n%.*s\n%.*s\n", (int)n1, a, (int)n2, b);
        abort();
    }
    lua_pop(L, 2);
}

static void round_trip(lua_State *L, const char *buf, size_t size) {
    char err[256];
    if (!json_decode_lua(L, buf, size, err, sizeof err)) {
        if (strncmp(err, "line ", 5) != 0) {
            fprintf(stderr, "fuzz_json: error without a position: %s\n", err);
            abort();
        }
        return;
    }
    if (!encode_top(L)) return;
    size_t n1;
    const char *t1 = lua_tolstring(L, -1, &n1);
    if (!json_decode_lua(L, t1, n1, err, sizeof err)) {
        fprintf(stderr, "fuzz_json: encoder output does not decode: %s\n", err);
        abort();
    }
    if (!encode_top(L)) abort();
    size_t n2;
    const char *t2 = lua_tolstring(L, -1, &n2);
    if (n1 != n2 || memcmp(t1, t2, n1) != 0) {
        fprintf(stderr, "fuzz_json: round trip differs:\n%.*s\n%.*s\n", (int)n1, t1, (int)n2, t2);
        abort();
    }
    lua_pop(L, 2);
}

static void via_lua(lua_State *L, const char *buf, size_t size) {
    static const char *code =
        "local json, text = ...\n"
        "local v, err = json.decode(text, {bigint = 'string'})\n"
        "if v == nil then assert(type(err) == 'string' and err:match('^line %d+ column %d+: ')) return end\n"
        "return json.encode(v, {indent = true, non_finite = 'null', invalid_utf8 = 'replace'})\n";
    static int ref = LUA_NOREF;
    if (ref == LUA_NOREF) {
        if (luaL_loadstring(L, code) != LUA_OK) fuzz_lua_fail(L, "load");
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    fuzz_require(L, "rollout.json");
    lua_pushlstring(L, buf, size);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) fuzz_lua_fail(L, "json via Lua");
    lua_pop(L, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lua_State *L = fuzz_lua(modules);
    fuzz_require(L, "rollout.json"); /* the C API needs luaopen_rollout_json to have run */
    lua_pop(L, 1);
    differential(L, (const char *)data, size);
    round_trip(L, (const char *)data, size);
    via_lua(L, (const char *)data, size);
    fuzz_lua_done(L);
    return 0;
}
