/* json.h: JSON <-> Lua values (strict RFC 8259 decoder, deterministic encoder).
 *
 * Lua API (module `rollout.json`, global `json`): see the header comment of src/json.c.
 *
 * The C API below is what fuzz targets and other modules need. Every function that can fail
 * runs protected: it never raises, it returns 0 and writes a message into err (err may be
 * NULL). On success it returns 1 and pushes exactly one value. They need
 * luaopen_rollout_json to have run in the state (require "rollout.json"): it installs the
 * decoder's cJSON allocator and the metatable that frees a decoding cut short.
 */
#ifndef ROLLOUT_JSON_H
#define ROLLOUT_JSON_H

#include <lua.h>
#include <stddef.h>

#define JSON_MAX_DEPTH 512

/* json_encode_lua flags */
#define JSON_ENCODE_SORT 1   /* object keys in byte order */
#define JSON_ENCODE_INDENT 2 /* pretty output, two spaces per level */

/* Decode s[0..n) and push the value; on malformed input err gets
 * "line L column C: message". [-0, +0|1, -] */
int json_decode_lua(lua_State *L, const char *s, size_t n, char *err, size_t errlen);

/* Encode the value at idx and push the JSON text; on failure (unencodable value, cycle,
 * NaN, ...) err names the path, e.g. "cannot encode a function at $.a[3].b". [-0, +0|1, -] */
int json_encode_lua(lua_State *L, int idx, int flags, char *err, size_t errlen);

/* The null sentinel shared by json and yaml (json.null == yaml.null). [-0, +1, m] */
void json_push_null(lua_State *L);
int json_is_null(lua_State *L, int idx);

/* The metatable that marks a table as a JSON array (json.array_mt): decoded arrays and YAML
 * sequences carry it, so `[]` round-trips as `[]`. [-0, +1, m] */
void json_push_array_mt(lua_State *L);

int luaopen_rollout_json(lua_State *L);

#endif
