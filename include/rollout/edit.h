/* edit.h: line input for the interactive clients (attach, repl): libedit's readline
 * compatibility on a terminal, plain lines from a pipe; never blocks the loop
 * (require "rollout.edit"). */
#ifndef ROLLOUT_EDIT_H
#define ROLLOUT_EDIT_H

#include <lua.h>

int luaopen_rollout_edit(lua_State *L);

#endif
