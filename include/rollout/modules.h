/* modules.h: the one list of C modules. Each is preloaded as require("rollout.<name>"). */
#ifndef ROLLOUT_MODULES_H
#define ROLLOUT_MODULES_H

#include <lua.h>

typedef struct {
    const char *name;
    lua_CFunction open;
} rollout_module;

extern const rollout_module rollout_modules[];

/* Preload every module into package.preload. [-0, +0, e] */
void modules_preload(lua_State *L);

#endif
