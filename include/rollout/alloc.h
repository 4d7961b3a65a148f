/* alloc.h: the host's lua_Alloc, with a global limit on the Lua heap and memory caps for
 * budgeted sections (a playbook hook, a REPL evaluation) that cannot be trusted to stop
 * allocating (require "rollout.alloc"). */
#ifndef ROLLOUT_ALLOC_H
#define ROLLOUT_ALLOC_H

#include <stddef.h>

#include <lua.h>

/* The allocator (realloc/free plus accounting). ud is unused. */
void *alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize);

/* A new state on alloc_lua with a panic handler, as luaL_newstate but for the allocator.
 * The global limit starts from $ROLLOUT_MEMORY_LIMIT ("2Gi", "0" for none), else
 * ALLOC_DEFAULT_LIMIT. NULL when out of memory. */
lua_State *alloc_newstate(void);

#define ALLOC_DEFAULT_LIMIT ((size_t)2 << 30)

/* Bytes the Lua heap holds now; the global limit (0: none). */
size_t alloc_total(void);
void alloc_set_limit(size_t bytes);

int luaopen_rollout_alloc(lua_State *L);

#endif
