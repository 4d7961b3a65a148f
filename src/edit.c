/* edit.c: the `edit` namespace: read lines from stdin for `rollout attach` and `rollout repl`.
 *
 * On a terminal, lines come from libedit's readline compatibility layer (line editing,
 * history, Ctrl-R) in its callback mode: an ev_io on stdin feeds rl_callback_read_char, so a
 * task waiting for a line parks like any other I/O and the loop keeps running (a REPL
 * evaluation, a control connection). From a pipe or a file, lines are read as they arrive
 * and no prompt is printed, so the REPL can be scripted.
 *
 * Lua API (require "rollout.edit"):
 *   edit.readline([prompt]) -> line | nil at end of input      (from a task)
 *   edit.add_history(line);  edit.read_history(path) -> bool;  edit.write_history(path) -> bool
 *   edit.isatty() -> bool    whether stdin is a terminal
 *   edit.close()             restore the terminal (also done at end of input)
 *
 * One task at a time may wait in readline; a second raises. Cancelling it removes the
 * handler and restores the terminal. Error policy: misuse raises; end of input is nil.
 */
#include "rollout/edit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <ev.h>
#include <lauxlib.h>

#include "rollout/loop.h"

static struct {
    ev_io io;
    task *waiter;
    int tty;       /* -1 unknown */
    int installed; /* libedit's callback handler is installed */
    int eof;
    char *buf; /* pipe mode: bytes read, not yet returned */
    size_t len, cap;
} E = {.tty = -1};

static int is_tty(void) {
    if (E.tty < 0) E.tty = isatty(STDIN_FILENO);
    return E.tty;
}

static void stop_io(void) {
    if (ev_is_active(&E.io)) ev_io_stop(loop_ev(), &E.io);
}

static void finish(const char *line, size_t n) {
    task *t = E.waiter;
    E.waiter = NULL;
    stop_io();
    if (!t) return;
    if (!loop_reserve(t, 1)) return; /* t fails with a stack overflow */
    lua_State *co = task_thread(t);
    if (line) lua_pushlstring(co, line, n);
    else lua_pushnil(co);
    loop_ready(t, 1);
}

/* ---- terminal (libedit) --------------------------------------------------------- */

static void on_line(char *line) {
    rl_callback_handler_remove();
    E.installed = 0;
    if (!line) E.eof = 1;
    finish(line, line ? strlen(line) : 0);
    free(line);
}

/* ---- pipe ----------------------------------------------------------------------- */

/* Hand out one buffered line if there is one (or the rest at EOF). Returns 1 if done. */
static int pipe_deliver(void) {
    char *nl = E.len ? memchr(E.buf, '\n', E.len) : NULL;
    if (!nl && !E.eof) return 0;
    if (!nl && E.len == 0) {
        finish(NULL, 0);
        return 1;
    }
    size_t n = nl ? (size_t)(nl - E.buf) : E.len;
    size_t used = nl ? n + 1 : n;
    size_t linelen = n > 0 && E.buf[n - 1] == '\r' ? n - 1 : n;
    finish(E.buf, linelen);
    memmove(E.buf, E.buf + used, E.len - used);
    E.len -= used;
    return 1;
}

static void pipe_fill(void) {
    if (E.cap - E.len < 4096) {
        size_t cap = E.cap ? E.cap * 2 : 8192;
        char *b = realloc(E.buf, cap);
        if (!b) {
            E.eof = 1; /* out of memory: end the input rather than lose lines silently */
            return;
        }
        E.buf = b;
        E.cap = cap;
    }
    ssize_t r = read(STDIN_FILENO, E.buf + E.len, E.cap - E.len);
    if (r > 0) E.len += (size_t)r;
    else if (r == 0 || (errno != EINTR && errno != EAGAIN)) E.eof = 1;
}

/* ---- readline ------------------------------------------------------------------ */

static void on_stdin(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)w;
    (void)revents;
    if (is_tty()) {
        rl_callback_read_char();
        return;
    }
    pipe_fill();
    pipe_deliver();
}

static void cancel_wait(void *ud) {
    (void)ud;
    E.waiter = NULL;
    stop_io();
    if (E.installed) {
        rl_callback_handler_remove();
        E.installed = 0;
    }
}

/* edit.readline([prompt]) -> line | nil  [-0, +1, e] */
static int l_edit_readline(lua_State *L) {
    const char *prompt = luaL_optstring(L, 1, "> ");
    if (E.waiter) return luaL_error(L, "edit.readline: another task is already reading stdin");
    loop_check_can_park(L, "edit.readline");
    if (!is_tty()) {
        if (E.len || E.eof) { /* a whole line may be buffered already */
            char *nl = E.len ? memchr(E.buf, '\n', E.len) : NULL;
            if (nl || E.eof) {
                size_t n = nl ? (size_t)(nl - E.buf) : E.len;
                if (!nl && n == 0) return lua_pushnil(L), 1;
                size_t linelen = n > 0 && E.buf[n - 1] == '\r' ? n - 1 : n;
                lua_pushlstring(L, E.buf, linelen);
                size_t used = nl ? n + 1 : n;
                memmove(E.buf, E.buf + used, E.len - used);
                E.len -= used;
                return 1;
            }
        }
    } else {
        if (E.eof) return lua_pushnil(L), 1;
        rl_callback_handler_install(prompt, on_line);
        E.installed = 1;
    }
    E.waiter = loop_park(L, cancel_wait, NULL);
    ev_io_init(&E.io, on_stdin, STDIN_FILENO, EV_READ);
    ev_io_start(loop_ev(), &E.io);
    lua_settop(L, 0);
    return lua_yield(L, 0);
}

/* edit.add_history(line): an empty line is not kept  [-0, +0, e] */
static int l_edit_add_history(lua_State *L) {
    const char *line = luaL_checkstring(L, 1);
    if (*line) add_history(line);
    return 0;
}

/* edit.read_history(path) -> ok  [-0, +1, e] */
static int l_edit_read_history(lua_State *L) {
    lua_pushboolean(L, read_history(luaL_checkstring(L, 1)) == 0);
    return 1;
}

/* edit.write_history(path) -> ok: the last 1000 lines  [-0, +1, e] */
static int l_edit_write_history(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    stifle_history(1000);
    lua_pushboolean(L, write_history(path) == 0);
    return 1;
}

/* edit.isatty() -> whether stdin is a terminal  [-0, +1, -] */
static int l_edit_isatty(lua_State *L) {
    lua_pushboolean(L, is_tty());
    return 1;
}

/* edit.close(): remove the line handler, if one is installed  [-0, +0, -] */
static int l_edit_close(lua_State *L) {
    (void)L;
    if (E.installed) {
        rl_callback_handler_remove();
        E.installed = 0;
    }
    return 0;
}

static const luaL_Reg edit_funcs[] = {
    {"readline", l_edit_readline},
    {"add_history", l_edit_add_history},
    {"read_history", l_edit_read_history},
    {"write_history", l_edit_write_history},
    {"isatty", l_edit_isatty},
    {"close", l_edit_close},
    {NULL, NULL},
};

/* require "rollout.edit" -> module  [-0, +1, m] */
int luaopen_rollout_edit(lua_State *L) {
    rl_readline_name = "rollout";
    luaL_newlib(L, edit_funcs);
    return 1;
}
