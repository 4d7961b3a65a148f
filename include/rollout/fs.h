/* fs.h: the `fs` namespace: the few file-system calls Lua lacks (directories, temp dirs,
 * durable writes). */
#ifndef ROLLOUT_FS_H
#define ROLLOUT_FS_H

#include <lua.h>

#include <stddef.h>

/* Write all n bytes (retrying short writes and EINTR): 0, or -1 with errno. */
int fs_write_all(int fd, const char *p, size_t n);
/* fsync the directory holding path, so a rename or create in it is durable: 0 or -1. */
int fs_sync_dir_of(const char *path);

int luaopen_rollout_fs(lua_State *L);

#endif
