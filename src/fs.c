/* fs.c: the `fs` namespace. Directories, temp dirs, durable whole-file writes, pids.
 * Local file-system calls are quick and bounded, so they run inline (as Lua's io does).
 *
 * Lua API:
 *   fs.list(dir) -> {names...} sorted       | nil, err
 *   fs.stat(path) -> {type=, size=, mode=, mtime=, uid=} | nil, err   (type "file"|"dir"|"link"|"socket"|"other")
 *   fs.mkdir(path [, mode=0755] [, parents]) -> true | nil, err  (existing dir is fine)
 *   fs.mkdtemp([prefix]) -> path            a fresh 0700 directory under $TMPDIR or /tmp
 *   fs.rmtree(path) -> true | nil, err      removes a tree (refuses "/" and "")
 *   fs.write_atomic(path, data [, mode]) -> true | nil, err   temp file, fsync, rename, fsync dir
 *   fs.read(path) -> data | nil, err
 *   fs.chmod(path, mode) -> true | nil, err
 *   fs.getpid() -> pid;  fs.kill(pid, sig=0) -> true | nil, err (sig 0 checks existence)
 *   fs.realpath(path) -> path | nil, err;  fs.getuid() -> uid
 *   fs.isatty(fd) -> bool                   whether descriptor fd (0, 1, 2, ...) is a terminal
 *   fs.winsize(fd) -> cols, rows | nil      the terminal's size on fd (TIOCGWINSZ), nil if none
 * Error policy: wrong argument types raise; file-system failures return nil, "path: reason".
 */
#include "rollout/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

static int fail(lua_State *L, const char *path) {
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    return 2;
}

/* true: what an fs call that succeeded returns  [-0, +1, -] */
static int ok(lua_State *L) { return lua_pushboolean(L, 1), 1; }

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* fs.list(dir) -> sorted names  [-0, +1|2, e] */
static int l_fs_list(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    DIR *d = opendir(dir);
    if (!d) return fail(L, dir);
    lua_newtable(L);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    /* sort in Lua's table: collect pointers from the strings on the table */
    const char **names = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *names, 0);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        names[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1); /* still anchored by the table */
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static const char *type_name(mode_t m) {
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "dir";
    if (S_ISLNK(m)) return "link";
    if (S_ISSOCK(m)) return "socket";
    return "other";
}

/* fs.stat(path) -> info  [-0, +1|2, e] */
static int l_fs_stat(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (lstat(path, &st) != 0) return fail(L, path);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, type_name(st.st_mode));
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    lua_setfield(L, -2, "mode");
    lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)st.st_uid);
    lua_setfield(L, -2, "uid");
    return 1;
}

static int mkdir_one(const char *path, mode_t mode) {
    if (mkdir(path, mode) == 0) return 0;
    struct stat st;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return -1;
}

/* fs.mkdir(path [, mode [, parents]]) -> true  [-0, +1|2, e] */
static int l_fs_mkdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0755);
    if (lua_toboolean(L, 3)) {
        char buf[PATH_MAX];
        if (strlen(path) >= sizeof buf) return errno = ENAMETOOLONG, fail(L, path);
        strcpy(buf, path);
        for (char *p = buf + 1; *p; p++) {
            if (*p != '/') continue;
            *p = 0;
            if (mkdir_one(buf, mode) != 0) return fail(L, buf);
            *p = '/';
        }
    }
    if (mkdir_one(path, mode) != 0) return fail(L, path);
    return ok(L);
}

/* fs.mkdtemp([prefix]) -> path  [-0, +1|2, e] */
static int l_fs_mkdtemp(lua_State *L) {
    const char *prefix = luaL_optstring(L, 1, "rollout");
    const char *tmp = getenv("TMPDIR");
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    if (!mkdtemp(buf)) return fail(L, buf);
    lua_pushstring(L, buf);
    return 1;
}

static int rmtree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char child[PATH_MAX];
        if (snprintf(child, sizeof child, "%s/%s", path, e->d_name) >= (int)sizeof child) {
            errno = ENAMETOOLONG;
            rc = -1;
        } else {
            rc = rmtree(child);
        }
    }
    closedir(d);
    return rc == 0 ? rmdir(path) : rc;
}

/* fs.rmtree(path) -> true  [-0, +1|2, e] */
static int l_fs_rmtree(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (!*path || !strcmp(path, "/")) return luaL_error(L, "fs.rmtree: refusing to remove '%s'", path);
    if (rmtree(path) != 0) return fail(L, path);
    return ok(L);
}

int fs_write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) return errno = EIO, -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int fs_sync_dir_of(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = 0;
    else if (slash) *slash = 0;
    else strcpy(dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* fs.write_atomic(path, data [, mode]) -> true  [-0, +1|2, e] */
static int l_fs_write_atomic(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    mode_t mode = (mode_t)luaL_optinteger(L, 3, 0644);
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return errno = ENAMETOOLONG, fail(L, path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return fail(L, tmp);
    if (fs_write_all(fd, data, n) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return fail(L, path);
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return fail(L, path);
    }
    if (fs_sync_dir_of(path) != 0) return fail(L, path);
    return ok(L);
}

/* fs.read(path) -> data  [-0, +1|2, e] */
static int l_fs_read(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(L, path);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
        char *p = luaL_prepbuffer(&b);
        ssize_t r = read(fd, p, LUAL_BUFFERSIZE);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return fail(L, path);
        }
        if (r == 0) break;
        luaL_addsize(&b, (size_t)r);
    }
    close(fd);
    luaL_pushresult(&b);
    return 1;
}

/* fs.chmod(path, mode) -> true  [-0, +1|2, e] */
static int l_fs_chmod(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (chmod(path, (mode_t)luaL_checkinteger(L, 2)) != 0) return fail(L, path);
    return ok(L);
}

/* fs.getpid() -> pid  [-0, +1, -] */
static int l_fs_getpid(lua_State *L) { return lua_pushinteger(L, getpid()), 1; }
/* fs.getuid() -> uid  [-0, +1, -] */
static int l_fs_getuid(lua_State *L) { return lua_pushinteger(L, (lua_Integer)getuid()), 1; }

/* fs.kill(pid [, sig=0]) -> true  [-0, +1|2, e] */
static int l_fs_kill(lua_State *L) {
    lua_Integer pid = luaL_checkinteger(L, 1);
    int sig = (int)luaL_optinteger(L, 2, 0);
    /* a pid that does not fit pid_t would wrap to -1: kill(-1) signals every process */
    if (pid <= 0 || pid > INT_MAX) return luaL_argerror(L, 1, "pid out of range");
    if (sig < 0 || sig > 64) return luaL_argerror(L, 2, "signal out of range");
    if (kill((pid_t)pid, sig) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "pid %d: %s", (int)pid, strerror(errno));
        return 2;
    }
    return ok(L);
}

/* fs.realpath(path) -> absolute path, links resolved  [-0, +1|2, e] */
static int l_fs_realpath(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    char buf[PATH_MAX];
    if (!realpath(path, buf)) return fail(L, path);
    lua_pushstring(L, buf);
    return 1;
}

/* fs.isatty(fd) -> bool  [-0, +1, e]: a live progress view only where a person watches. */
static int l_fs_isatty(lua_State *L) {
    lua_Integer fd = luaL_checkinteger(L, 1);
    lua_pushboolean(L, fd >= 0 && fd <= INT_MAX && isatty((int)fd));
    return 1;
}

/* fs.winsize(fd) -> cols, rows | nil  [-0, +1|2, e]: the width the live view draws to. A
 * descriptor that is not a terminal, or a terminal that reports 0 columns, gives nil. */
static int l_fs_winsize(lua_State *L) {
    lua_Integer fd = luaL_checkinteger(L, 1);
    struct winsize ws;
    if (fd < 0 || fd > INT_MAX || ioctl((int)fd, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, ws.ws_col);
    lua_pushinteger(L, ws.ws_row);
    return 2;
}

static const luaL_Reg fs_funcs[] = {
    {"list", l_fs_list},       {"stat", l_fs_stat},       {"mkdir", l_fs_mkdir},
    {"mkdtemp", l_fs_mkdtemp}, {"rmtree", l_fs_rmtree},   {"write_atomic", l_fs_write_atomic},
    {"read", l_fs_read},       {"chmod", l_fs_chmod},     {"getpid", l_fs_getpid},
    {"getuid", l_fs_getuid},   {"kill", l_fs_kill},       {"realpath", l_fs_realpath},
    {"isatty", l_fs_isatty},   {"winsize", l_fs_winsize}, {NULL, NULL},
};

/* require "rollout.fs" -> module  [-0, +1, m] */
int luaopen_rollout_fs(lua_State *L) {
    luaL_newlib(L, fs_funcs);
    return 1;
}
