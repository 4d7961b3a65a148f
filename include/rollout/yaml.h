/* yaml.h: YAML -> Lua values (libyaml's event parser, YAML 1.2 core schema).
 *
 * Lua API (module `rollout.yaml`, global `yaml`): see the header comment of src/yaml.c.
 *
 * The C API is what fuzz targets need. It never raises: it returns 1 and pushes the value,
 * or returns 0, pushes nothing and writes "name:line:col: message" into err (may be NULL).
 */
#ifndef ROLLOUT_YAML_H
#define ROLLOUT_YAML_H

#include <lua.h>
#include <stddef.h>

#define YAML_MAX_DEPTH 512
#define YAML_DEFAULT_MAX_NODES 1000000 /* counting alias expansions: the alias-bomb guard */

/* Load the first document of s[0..n); name (may be NULL) prefixes error positions.
 * [-0, +0|1, -] */
int yaml_load_lua(lua_State *L, const char *s, size_t n, const char *name, char *err, size_t errlen);

int luaopen_rollout_yaml(lua_State *L);

#endif
