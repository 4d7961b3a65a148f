/* journal.h: durable appends, torn-tail-aware reads and lock files for the rollout journal
 * (require "rollout.journal.core"; lua/rollout/journal.lua builds the journal on top). */
#ifndef ROLLOUT_JOURNAL_H
#define ROLLOUT_JOURNAL_H

#include <lua.h>

int luaopen_rollout_journal_core(lua_State *L);

#endif
