/* promtext_lua.h: what the two files of the `promtext` Lua namespace share —
 * src/promtext.c (parse, the module table, the shared parser) and src/promtext_select.c
 * (select), including two small helpers of the parser. Not an API for other modules: they
 * use promtext.h. */
#ifndef ROLLOUT_PROMTEXT_LUA_H
#define ROLLOUT_PROMTEXT_LUA_H

#include <lua.h>

#include "rollout/promtext.h"

typedef struct {
    promtext_parser parser;
    int busy;
} promtext_parser_box;

/* The module's parser (upvalue 1 of every promtext function), or a fresh one while it is
 * busy; pushes the box to keep it alive. The caller clears ->busy when done. [-0, +1, m] */
promtext_parser_box *promtext_parser_acquire(lua_State *L);

/* Push nil, "line N: message". Returns 2. [-0, +2, m] */
int promtext_push_parse_error(lua_State *L, const promtext_error *err);

/* Grow *ptr (of *cap elements of elem bytes) to hold need elements, doubling. 0, or -1
 * when out of memory (*ptr unchanged). */
int promtext_grow(void **ptr, size_t *cap, size_t need, size_t elem);

/* A printable excerpt of s[0..n) for error messages: at most 32 bytes then "...". */
const char *promtext_excerpt(char out[40], const char *s, size_t n);

/* promtext.select(text, selectors) [-0, +1|2, e] */
int l_promtext_select(lua_State *L);

/* Create the metatable l_promtext_select needs; called once by luaopen. [-0, +0, m] */
void promtext_select_init(lua_State *L);

#endif
