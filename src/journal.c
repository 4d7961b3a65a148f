/* journal.c: the `journal.core` namespace: what the rollout journal needs from the OS.
 * lua/rollout/journal.lua holds the format (JSON lines) and the policy.
 *
 * Lua API (require "rollout.journal.core"):
 *   open(path [, mode=0600]) -> file | nil, "path: reason"
 *       O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC; a new file's directory entry is fsync'd too.
 *   file:append(data) -> true | nil, "path: reason"
 *       writes all of data (one or more whole lines), then fdatasync. If the write or the
 *       sync fails, the file is truncated back to its size before the call, so a failed
 *       append never leaves part of a line behind for the next append to run into.
 *   file:truncate(size) -> true | nil, err      cut a torn tail off (then fsync)
 *   file:size() -> bytes;  file:path() -> path;  file:close()
 *   read(path) -> lines, info | nil, "path: reason"
 *       lines: every complete line ("\n"-terminated), without the "\n". info = {size=,
 *       valid = bytes up to and including the last "\n", torn = the bytes after it or nil}.
 *       A crash in the middle of a write leaves at most such an unterminated tail: it is
 *       reported, never returned as a line.
 *   lock(path) -> lock | nil, "path: held by pid N", N | nil, err
 *       an exclusive flock(2) on path (created 0600) with our pid written into it. The
 *       kernel drops the lock when the holder dies, also on kill -9, so a stale file never
 *       blocks anyone; the pid inside only names the holder in the refusal.
 *   lock:release() removes the file and unlocks (idempotent); lock:pid(); lock:path()
 *       A collected lock unlocks (the descriptor closes) but leaves the file.
 *   fsync_dir(path) -> true | nil, err
 *
 * Local file-system calls are short and bounded, so they run inline, as fs.c's do; the
 * fsync is the point (an event is durable before its effect is reported done).
 * Error policy: wrong argument types raise; file-system failures return nil, "path: reason"
 * with the errno text (ENOSPC reads "No space left on device").
 */
#include "rollout/journal.h"
#include "rollout/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#define FILE_MT "rollout.journal.file"
#define LOCK_MT "rollout.journal.lock"

struct jfile {
    int fd;
    char path[PATH_MAX];
};

struct jlock {
    int fd;
    int pid;
    char path[PATH_MAX];
};

/* ---- helpers ---------------------------------------------------------------------- */

static int fail_errno(lua_State *L, const char *path, int e) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    return 2;
}

static const char *check_path(lua_State *L, int idx) {
    size_t n;
    const char *path = luaL_checklstring(L, idx, &n);
    if (n == 0 || n >= PATH_MAX) luaL_argerror(L, idx, "path is empty or too long");
    return path;
}

/* ---- appending ---------------------------------------------------------------------- */

static struct jfile *check_file(lua_State *L) {
    struct jfile *f = luaL_checkudata(L, 1, FILE_MT);
    if (f->fd < 0) luaL_error(L, "journal file %s is closed", f->path);
    return f;
}

/* open(path [, mode]) -> file  [-0, +1|2, e] */
static int l_journal_open(lua_State *L) {
    const char *path = check_path(L, 1);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0600);
    struct stat st;
    int existed = stat(path, &st) == 0;
    struct jfile *f = lua_newuserdatauv(L, sizeof *f, 0);
    f->fd = -1;
    snprintf(f->path, sizeof f->path, "%s", path);
    luaL_setmetatable(L, FILE_MT);
    f->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode);
    if (f->fd < 0) return fail_errno(L, path, errno);
    if (!existed && fs_sync_dir_of(path) != 0) {
        int e = errno;
        close(f->fd);
        f->fd = -1;
        return fail_errno(L, path, e);
    }
    return 1;
}

/* file:append(data) -> true  [-0, +1|2, e] */
static int l_file_append(lua_State *L) {
    struct jfile *f = check_file(L);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    struct stat st;
    if (fstat(f->fd, &st) != 0) return fail_errno(L, f->path, errno);
    if (fs_write_all(f->fd, data, n) == 0 && fdatasync(f->fd) == 0) return lua_pushboolean(L, 1), 1;
    int e = errno;
    /* take back whatever part of the line reached the file; best effort, the file may be
     * unwritable altogether (a read-only remount) */
    if (ftruncate(f->fd, st.st_size) == 0) (void)fdatasync(f->fd);
    return fail_errno(L, f->path, e);
}

/* file:truncate(size) -> true  [-0, +1|2, e] */
static int l_file_truncate(lua_State *L) {
    struct jfile *f = check_file(L);
    lua_Integer size = luaL_checkinteger(L, 2);
    luaL_argcheck(L, size >= 0, 2, "size must be >= 0");
    if (ftruncate(f->fd, (off_t)size) != 0 || fsync(f->fd) != 0) return fail_errno(L, f->path, errno);
    return lua_pushboolean(L, 1), 1;
}

/* file:size() -> bytes  [-0, +1|2, e] */
static int l_file_size(lua_State *L) {
    struct jfile *f = check_file(L);
    struct stat st;
    if (fstat(f->fd, &st) != 0) return fail_errno(L, f->path, errno);
    lua_pushinteger(L, (lua_Integer)st.st_size);
    return 1;
}

/* file:path() -> path  [-0, +1, e] */
static int l_file_path(lua_State *L) {
    struct jfile *f = luaL_checkudata(L, 1, FILE_MT);
    lua_pushstring(L, f->path);
    return 1;
}

/* file:close(), also its __gc  [-0, +0, e] */
static int l_file_close(lua_State *L) {
    struct jfile *f = luaL_checkudata(L, 1, FILE_MT);
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    return 0;
}

/* __tostring of a journal file  [-0, +1, e] */
static int l_file_tostring(lua_State *L) {
    struct jfile *f = luaL_checkudata(L, 1, FILE_MT);
    lua_pushfstring(L, "journal file %s%s", f->path, f->fd < 0 ? " (closed)" : "");
    return 1;
}

/* ---- reading ---------------------------------------------------------------------- */

/* Push the whole file as a string. [-0, +1, m] Returns 0, or -1 with errno set. */
static int slurp(lua_State *L, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
        char *p = luaL_prepbuffer(&b);
        ssize_t r = read(fd, p, LUAL_BUFFERSIZE);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            luaL_pushresult(&b);
            lua_pop(L, 1);
            errno = e;
            return -1;
        }
        if (r == 0) break;
        luaL_addsize(&b, (size_t)r);
    }
    close(fd);
    luaL_pushresult(&b);
    return 0;
}

/* read(path) -> lines, info  [-0, +2, e] */
static int l_journal_read(lua_State *L) {
    const char *path = check_path(L, 1);
    if (slurp(L, path) != 0) return fail_errno(L, path, errno);
    size_t n;
    const char *data = lua_tolstring(L, -1, &n);
    lua_newtable(L);
    lua_Integer count = 0;
    size_t start = 0;
    for (;;) {
        const char *nl = memchr(data + start, '\n', n - start);
        if (!nl) break;
        size_t end = (size_t)(nl - data);
        lua_pushlstring(L, data + start, end - start);
        lua_rawseti(L, -2, ++count);
        start = end + 1;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)start);
    lua_setfield(L, -2, "valid");
    if (start < n) {
        lua_pushlstring(L, data + start, n - start);
        lua_setfield(L, -2, "torn");
    }
    lua_remove(L, -3);
    return 2;
}

/* fsync_dir(path) -> true: make a rename or a new file in path's directory durable.  [-0, +1|2, e] */
static int l_journal_fsync_dir(lua_State *L) {
    const char *path = check_path(L, 1);
    if (fs_sync_dir_of(path) != 0) return fail_errno(L, path, errno);
    return lua_pushboolean(L, 1), 1;
}

/* ---- locks ---------------------------------------------------------------------- */

/* The pid the holder wrote, or 0 when it has not written one yet. */
static int read_holder(int fd) {
    char buf[32];
    for (int i = 0; i < 50; i++) {
        ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
        if (r > 0) {
            buf[r] = 0;
            int pid = atoi(buf);
            if (pid > 0) return pid;
        }
        usleep(1000); /* the holder is between flock and write: a millisecond at most */
    }
    return 0;
}

static int holder_refusal(lua_State *L, const char *path, int fd) {
    int pid = read_holder(fd);
    close(fd);
    lua_pushnil(L);
    if (pid > 0) lua_pushfstring(L, "%s: held by pid %d", path, pid);
    else lua_pushfstring(L, "%s: held by another process", path);
    lua_pushinteger(L, pid);
    return 3;
}

/* lock(path) -> lock | nil, err, pid  [-0, +1|3, e] */
static int l_journal_lock(lua_State *L) {
    const char *path = check_path(L, 1);
    for (int attempt = 0; attempt < 10; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) return fail_errno(L, path, errno);
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno == EWOULDBLOCK) return holder_refusal(L, path, fd);
            int e = errno;
            close(fd);
            return fail_errno(L, path, e);
        }
        /* a releasing holder may have unlinked the file between our open and flock: then
         * we hold a lock on a file nobody else will open; start again */
        struct stat a, b;
        if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
            close(fd);
            continue;
        }
        char buf[32];
        int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
        if (ftruncate(fd, 0) != 0 || fs_write_all(fd, buf, (size_t)len) != 0 || fsync(fd) != 0) {
            int e = errno;
            close(fd);
            return fail_errno(L, path, e);
        }
        struct jlock *k = lua_newuserdatauv(L, sizeof *k, 0);
        k->fd = fd;
        k->pid = (int)getpid();
        snprintf(k->path, sizeof k->path, "%s", path);
        luaL_setmetatable(L, LOCK_MT);
        return 1;
    }
    lua_pushnil(L);
    lua_pushfstring(L, "%s: could not take the lock (the file keeps changing)", path);
    return 2;
}

/* lock:release(): unlink the lock file while holding it, then close it  [-0, +0, e] */
static int l_lock_release(lua_State *L) {
    struct jlock *k = luaL_checkudata(L, 1, LOCK_MT);
    if (k->fd >= 0) {
        unlink(k->path); /* while still holding it: the next locker creates a fresh file */
        close(k->fd);
        k->fd = -1;
    }
    return 0;
}

/* __gc of a lock: closing the descriptor releases the lock; the file stays  [-0, +0, e] */
static int l_lock_gc(lua_State *L) {
    struct jlock *k = luaL_checkudata(L, 1, LOCK_MT);
    if (k->fd >= 0) close(k->fd);
    k->fd = -1;
    return 0;
}

/* lock:pid() -> pid  [-0, +1, e] */
static int l_lock_pid(lua_State *L) {
    struct jlock *k = luaL_checkudata(L, 1, LOCK_MT);
    lua_pushinteger(L, k->pid);
    return 1;
}

/* lock:path() -> path  [-0, +1, e] */
static int l_lock_path(lua_State *L) {
    struct jlock *k = luaL_checkudata(L, 1, LOCK_MT);
    lua_pushstring(L, k->path);
    return 1;
}

/* __tostring of a lock  [-0, +1, e] */
static int l_lock_tostring(lua_State *L) {
    struct jlock *k = luaL_checkudata(L, 1, LOCK_MT);
    lua_pushfstring(L, "lock %s (pid %d%s)", k->path, k->pid, k->fd < 0 ? ", released" : "");
    return 1;
}

/* ---- registration ------------------------------------------------------------------ */

static const luaL_Reg file_methods[] = {
    {"append", l_file_append}, {"truncate", l_file_truncate}, {"size", l_file_size},
    {"path", l_file_path},     {"close", l_file_close},       {NULL, NULL},
};

static const luaL_Reg lock_methods[] = {
    {"release", l_lock_release},
    {"pid", l_lock_pid},
    {"path", l_lock_path},
    {NULL, NULL},
};

static const luaL_Reg journal_funcs[] = {
    {"open", l_journal_open},
    {"read", l_journal_read},
    {"lock", l_journal_lock},
    {"fsync_dir", l_journal_fsync_dir},
    {NULL, NULL},
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                      lua_CFunction tostring) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

/* require "rollout.journal.core" -> module  [-0, +1, m] */
int luaopen_rollout_journal_core(lua_State *L) {
    new_class(L, FILE_MT, file_methods, l_file_close, l_file_tostring);
    new_class(L, LOCK_MT, lock_methods, l_lock_gc, l_lock_tostring);
    luaL_newlib(L, journal_funcs);
    return 1;
}
