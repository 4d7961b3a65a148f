/* fs.h: the `fs` namespace: the few file-system calls Lua lacks (directories, temp dirs,
 * durable writes). */
#ifndef ROLLOUT_FS_H
#define ROLLOUT_FS_H

#include <lua.h>

int luaopen_rollout_fs(lua_State *L);

#endif
