/* budget.h: an instruction and time budget for Lua code that cannot be trusted to stop
 * (REPL input, playbook hooks), with preemption so a runaway never holds the loop
 * (require "rollout.budget"). */
#ifndef ROLLOUT_BUDGET_H
#define ROLLOUT_BUDGET_H

#include <lua.h>

int luaopen_rollout_budget(lua_State *L);

#endif
