/* proc.h: the `proc` namespace: run programs and start long-lived servers without blocking
 * the loop (fork + execvp, never a shell; children watched with libev's ev_child).
 * The Lua API and its error policy are described at the top of src/proc.c. */
#ifndef ROLLOUT_PROC_H
#define ROLLOUT_PROC_H

#include <lua.h>

int luaopen_rollout_proc(lua_State *L);

#endif
