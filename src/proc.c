/* proc.c: the `proc` namespace: run programs without blocking the loop.
 *
 * Programs are started with fork + execvp (argv, never a shell) and watched by libev: ev_child
 * on the default loop (libev owns SIGCHLD; there is no handler of ours) and ev_io on
 * non-blocking pipes. The calling task parks with loop_park until the child has exited and its
 * output has reached EOF.
 *
 * Lua API:
 *   proc.run{argv = {prog, args...}, stdin = data?, timeout = secs|"5s"?, env = {NAME = value|false}?,
 *            cwd = dir?, max_output = bytes|"64Mi"?, grace = secs?}
 *     -> {code = n|nil, signal = "TERM"|nil, stdout = s, stderr = s, time = secs, pid = n}
 *     | nil, "timed out after N s", partial           partial: that table, with the output so far
 *     | nil, "stdout of 'prog' exceeded N bytes", partial
 *     | nil, "cannot run 'prog': No such file or directory"
 *   A non-zero exit is not an error: look at .code. `code` is nil when a signal ended the
 *   program, `signal` then names it. stdin is /dev/null unless `stdin` is given. `env` adds to
 *   (or, with false, removes from) our environment. On a timeout or when the output passes
 *   max_output (default 64 MiB per stream) the child's process group gets SIGTERM, then SIGKILL
 *   after `grace` seconds (default 2). Output of grandchildren that keep the pipes open is
 *   read for at most 1 s after the child exits.
 *
 *   proc.spawn{argv = ..., stdout = path|"inherit"|"null", stderr = ..., env =, cwd =} -> child | nil, err
 *     for long-lived servers. stdin is /dev/null; a path is opened for appending (created 0644).
 *     Defaults: "inherit".
 *   child:pid() -> pid
 *   child:running() -> bool         false once the loop has seen it exit
 *   child:wait([timeout]) -> code, nil | nil, "TERM" (killed by a signal) | nil, "timeout"
 *   child:kill([sig = "TERM"]) -> true | nil, err     sig: "TERM", "SIGKILL", 9, ...
 *
 * Children: every child leads its own process group (setpgid), and signals from us (timeout,
 * kill, cancel) go to that group, so a wrapper's own children go too. Each child also has
 * PR_SET_PDEATHSIG = SIGTERM, so servers a crashed or killed runner started do not linger
 * (Linux; the signal comes when our process dies). Descriptors other than 0-2 are closed in
 * the child (close_range), signal dispositions reset and the signal mask cleared.
 *
 * Cancelling a task in proc.run closes the pipes and signals the group (TERM, then KILL after
 * the grace period); the child is reaped in the background. A child handle stays alive while
 * its process runs; when the Lua state closes, running children get SIGTERM, then SIGKILL
 * after 2 s (a blocking wait, at exit only).
 *
 * Timeouts here are real seconds (they bound real processes), also under the virtual clock.
 * While a proc.run or child:wait is pending, the virtual clock does not jump.
 *
 * Error policy: bad arguments and unknown option keys raise, naming the key; failures to
 * start or a timeout return nil, err. Calling run or wait outside a task raises.
 */
#include "rollout/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "rollout/loop.h"
#include "rollout/units.h"

#define RUN_MT "rollout.proc.run"
#define CHILD_MT "rollout.proc.child"

#define DEFAULT_MAX_OUTPUT ((size_t)64 << 20)
#define DEFAULT_GRACE 2.0
#define LINGER 1.0     /* seconds to wait for EOF after the child exited */
#define EXIT_GRACE 2.0 /* at lua_close: TERM, then KILL after this */
#define READ_CHUNK 65536

#define OWNER(ptr, type, member) ((type *)(void *)(((char *)(ptr)) - offsetof(type, member)))

extern char **environ;

/* ---- small helpers ---------------------------------------------------------------- */

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Start a one-shot timer `seconds` from now (libev's cached time may be stale after a long
 * stretch of Lua, hence the update). */
static void timer_arm(ev_timer *t, double seconds) {
    struct ev_loop *ev = loop_ev();
    ev_timer_stop(ev, t);
    ev_now_update(ev);
    ev_timer_set(t, seconds > 0 ? seconds : 0, 0);
    ev_timer_start(ev, t);
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* Keep our pipe ends off 0-2, so the child's dup2 onto 0-2 cannot clobber one of them. */
static int fd_above_stdio(int fd) {
    if (fd < 0 || fd > 2) return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return moved;
}

static int make_pipe(int p[2]) {
    if (pipe2(p, O_CLOEXEC) != 0) return -1;
    p[0] = fd_above_stdio(p[0]);
    p[1] = fd_above_stdio(p[1]);
    if (p[0] >= 0 && p[1] >= 0) return 0;
    close_fd(&p[0]);
    close_fd(&p[1]);
    return -1;
}

static int open_devnull(void) { return fd_above_stdio(open("/dev/null", O_RDWR | O_CLOEXEC)); }

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static task *check_task_context(lua_State *L, const char *what) { return loop_check_can_park(L, what); }

/* Seconds from a number or a duration string at idx; `def` when nil. [-0, +0, e] */
static double check_seconds_at(lua_State *L, int idx, double def, const char *what) {
    if (lua_isnoneornil(L, idx)) return def;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        double s = lua_tonumber(L, idx);
        if (!(s >= 0)) luaL_error(L, "%s must be >= 0", what);
        return s;
    }
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    char err[128];
    double v = 0;
    if (lua_type(L, idx) != LUA_TSTRING || units_duration(s, n, &v, err, sizeof err) != 0)
        luaL_error(L, "%s must be seconds or a duration like \"5s\"", what);
    return v;
}

static double field_seconds(lua_State *L, int opts, const char *key, double def, const char *what) {
    lua_getfield(L, opts, key);
    double v = check_seconds_at(L, -1, def, what);
    lua_pop(L, 1);
    return v;
}

static size_t field_bytes(lua_State *L, int opts, const char *key, size_t def, const char *what) {
    lua_getfield(L, opts, key);
    double v = (double)def;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        v = lua_tonumber(L, -1);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        char err[128];
        if (units_bytes(s, n, &v, err, sizeof err) != 0) v = -1;
    } else if (!lua_isnil(L, -1)) {
        v = -1;
    }
    lua_pop(L, 1);
    if (!(v >= 1) || v > 1e15) luaL_error(L, "%s must be a byte count > 0 (like 1048576 or \"64Mi\")", what);
    return (size_t)v;
}

/* An option table whose keys are all in `keys`, else an error naming the key. [-0, +0, e] */
static void check_keys(lua_State *L, int opts, const char *fn, const char *const keys[]) {
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; keys[i] && !known; i++) known = !strcmp(keys[i], lua_tostring(L, -1));
        if (!known) luaL_error(L, "%s: unknown option '%s'", fn, luaL_tolstring(L, -1, NULL));
    }
}

/* ---- signals by name ---------------------------------------------------------------- */

static void push_signal_name(lua_State *L, int sig) {
    const char *name = sigabbrev_np(sig);
    if (name) lua_pushstring(L, name);
    else lua_pushinteger(L, sig);
}

/* "TERM", "SIGTERM" or a number at idx; `def` when absent. [-0, +0, e] */
static int check_signal(lua_State *L, int idx, int def) {
    if (lua_isnoneornil(L, idx)) return def;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer s = luaL_checkinteger(L, idx);
        if (s < 0 || s >= NSIG) luaL_argerror(L, idx, "no such signal");
        return (int)s;
    }
    const char *name = luaL_checkstring(L, idx);
    if (!strncmp(name, "SIG", 3)) name += 3;
    for (int s = 1; s < NSIG; s++) {
        const char *abbrev = sigabbrev_np(s);
        if (abbrev && !strcmp(abbrev, name)) return s;
    }
    return luaL_argerror(L, idx, "no such signal (use names like \"TERM\" or numbers)");
}

/* Fields code/signal of a wait status into the table on top. [-0, +0, -] */
static void set_status_fields(lua_State *L, int status) {
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        lua_setfield(L, -2, "code");
    } else if (WIFSIGNALED(status)) {
        push_signal_name(L, WTERMSIG(status));
        lua_setfield(L, -2, "signal");
    }
}

/* ---- starting a child ----------------------------------------------------------------- */

struct exec_req {
    char **argv;
    char **envp;     /* NULL: inherit ours */
    const char *cwd; /* NULL: ours */
    int stdio[3];    /* descriptors that become 0, 1, 2 */
};

struct exec_failure {
    int stage; /* 0 exec, 1 cwd, 2 setup */
    int err;
};

static void child_fail(int fd, int stage) {
    struct exec_failure f = {stage, errno};
    ssize_t rc = write(fd, &f, sizeof f);
    (void)rc;
    _exit(127);
}

/* In the forked child: only async-signal-safe calls until exec. */
static void child_main(const struct exec_req *x, int errfd, pid_t parent) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++) sigaction(s, &dfl, NULL); /* ignored ones stay ignored else */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) child_fail(errfd, 2);
    if (getppid() != parent) _exit(127); /* the parent died before prctl took effect */
    if (setpgid(0, 0) != 0) child_fail(errfd, 2);
    for (int i = 0; i < 3; i++)
        if (dup2(x->stdio[i], i) < 0) child_fail(errfd, 2);
    if (x->cwd && chdir(x->cwd) != 0) child_fail(errfd, 1);
    if (errfd > 3) close_range(3, (unsigned)errfd - 1, 0);
    close_range((unsigned)errfd + 1, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (x->envp) execvpe(x->argv[0], x->argv, x->envp);
    else execvp(x->argv[0], x->argv);
    child_fail(errfd, 0);
}

/* Fork and exec; returns the pid, or -1 with "cannot run 'prog': reason" in err. Reports exec
 * failures synchronously through a close-on-exec pipe (the wait lasts until the child execs). */
static pid_t spawn_process(const struct exec_req *x, char *err, size_t errlen) {
    int ep[2];
    if (make_pipe(ep) != 0) {
        snprintf(err, errlen, "cannot run '%s': pipe: %s", x->argv[0], strerror(errno));
        return -1;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old); /* no handler of ours may run in the child */
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) child_main(x, ep[1], parent);
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(ep[1]);
    if (pid < 0) {
        close(ep[0]);
        snprintf(err, errlen, "cannot run '%s': fork: %s", x->argv[0], strerror(fork_errno));
        return -1;
    }
    struct exec_failure f;
    ssize_t n;
    do n = read(ep[0], &f, sizeof f);
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n != (ssize_t)sizeof f) return pid; /* EOF: exec succeeded */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    static const char *const stages[] = {"", "cwd ", "child setup: "};
    snprintf(err, errlen, "cannot run '%s': %s%s%s%s", x->argv[0], stages[f.stage], f.stage == 1 ? x->cwd : "",
             f.stage == 1 ? ": " : "", strerror(f.err));
    return -1;
}

/* argv from opts.argv: strings (numbers converted), anchored in a fresh table.
 * [-0, +2, e] pushes the anchor table and the char*[] userdata. */
static char **push_argv(lua_State *L, int opts, const char *fn) {
    lua_getfield(L, opts, "argv");
    if (!lua_istable(L, -1)) luaL_error(L, "%s: argv must be a list {program, args...}", fn);
    int src = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, src);
    if (n < 1) luaL_error(L, "%s: argv is empty", fn);
    lua_createtable(L, (int)n, 0);
    char **argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        int t = lua_rawgeti(L, src, i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            luaL_error(L, "%s: argv[%d] must be a string, not %s", fn, (int)i, lua_typename(L, t));
        argv[i - 1] = (char *)lua_tostring(L, -1);
        lua_rawseti(L, src + 1, i); /* anchors the (converted) string */
    }
    argv[n] = NULL;
    lua_remove(L, src);
    return argv;
}

/* The child's environment: ours with opts.env applied. nil when opts.env is absent.
 * [-0, +2, e] pushes the strings table (or nil) and the char*[] userdata (or nil). */
static char **push_env(lua_State *L, int opts, const char *fn) {
    lua_getfield(L, opts, "env");
    if (lua_isnil(L, -1)) {
        lua_pushnil(L);
        return NULL;
    }
    if (!lua_istable(L, -1)) luaL_error(L, "%s: env must be a table {NAME = value|false}", fn);
    int env = lua_gettop(L);
    lua_newtable(L);
    int m = env + 1;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, *e);
        lua_rawset(L, m);
    }
    lua_pushnil(L);
    while (lua_next(L, env)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k || !*k || strchr(k, '=')) luaL_error(L, "%s: env names must be non-empty strings without '='", fn);
        lua_pushvalue(L, -2);
        int t = lua_type(L, -2);
        if (t == LUA_TBOOLEAN && !lua_toboolean(L, -2)) lua_pushnil(L);
        else if (t == LUA_TSTRING || t == LUA_TNUMBER) lua_pushfstring(L, "%s=%s", k, lua_tostring(L, -2));
        else luaL_error(L, "%s: env.%s must be a string, a number or false", fn, k);
        lua_rawset(L, m);
        lua_pop(L, 1);
    }
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, m)) n++, lua_pop(L, 1);
    char **envp = lua_newuserdatauv(L, (n + 1) * sizeof *envp, 0);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, m)) {
        envp[i++] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    envp[i] = NULL;
    lua_remove(L, env);
    return envp;
}

static const char *field_cwd(lua_State *L, int opts, const char *fn) {
    lua_getfield(L, opts, "cwd");
    int t = lua_type(L, -1);
    if (t != LUA_TNIL && t != LUA_TSTRING) luaL_error(L, "%s: cwd must be a string", fn);
    const char *cwd = lua_tostring(L, -1);
    lua_pop(L, 1); /* still anchored by opts, which nothing changes before exec */
    return cwd;
}

/* argv, env and cwd of an options table. [-0, +4, e] */
static void read_exec_req(lua_State *L, int opts, const char *fn, struct exec_req *x) {
    x->argv = push_argv(L, opts, fn);
    x->envp = push_env(L, opts, fn);
    x->cwd = field_cwd(L, opts, fn);
}

/* ---- proc.run ------------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

struct run {
    ev_child child;
    ev_io in_w, out_w, err_w;
    ev_timer kill_timer;   /* the timeout, then the grace period before SIGKILL */
    ev_timer linger_timer; /* EOF wait after the exit */
    task *task;            /* NULL once cancelled or done */
    int ref;               /* registry anchor while the child or a pipe is live */
    pid_t pid;
    int reaped, status, done;
    int killing; /* 0, 1 TERM sent, 2 KILL sent */
    int timed_out;
    int overflow;        /* 0, 1 stdout, 2 stderr */
    const char *in_data; /* the stdin string, anchored on the task's stack */
    size_t in_len, in_off;
    struct buf out, err;
    size_t max_output;
    double timeout, grace, started, ended;
};

static void io_close(ev_io *w) {
    ev_io_stop(loop_ev(), w);
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
}

static void run_check_done(struct run *r) {
    if (r->done || !r->reaped || r->out_w.fd >= 0 || r->err_w.fd >= 0) return;
    r->done = 1;
    r->ended = mono_now();
    io_close(&r->in_w);
    ev_timer_stop(loop_ev(), &r->linger_timer);
    ev_timer_stop(loop_ev(), &r->kill_timer);
    luaL_unref(loop_lua(), LUA_REGISTRYINDEX, r->ref);
    r->ref = LUA_NOREF;
    task *t = r->task;
    r->task = NULL;
    if (t) loop_ready(t, 0);
}

/* TERM to the child's group now, KILL after the grace period. */
static void run_kill(struct run *r) {
    if (r->reaped || r->killing) return;
    kill(-r->pid, SIGTERM);
    r->killing = 1;
    timer_arm(&r->kill_timer, r->grace);
}

static void run_on_kill_timer(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)revents;
    struct run *r = OWNER(w, struct run, kill_timer);
    if (r->reaped) return;
    if (!r->killing) {
        r->timed_out = 1;
        run_kill(r);
    } else {
        kill(-r->pid, SIGKILL);
        r->killing = 2;
    }
}

static void run_on_linger(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)revents;
    struct run *r = OWNER(w, struct run, linger_timer);
    io_close(&r->out_w);
    io_close(&r->err_w);
    run_check_done(r);
}

static void run_on_exit(struct ev_loop *ev, ev_child *w, int revents) {
    (void)revents;
    struct run *r = OWNER(w, struct run, child);
    ev_child_stop(ev, w);
    r->reaped = 1;
    r->status = w->rstatus;
    ev_timer_stop(ev, &r->kill_timer);
    io_close(&r->in_w);
    if (r->out_w.fd >= 0 || r->err_w.fd >= 0) timer_arm(&r->linger_timer, LINGER);
    run_check_done(r);
}

static void run_on_stdin(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    struct run *r = OWNER(w, struct run, in_w);
    while (r->in_off < r->in_len) {
        size_t n = r->in_len - r->in_off;
        ssize_t k = write(w->fd, r->in_data + r->in_off, n > (1u << 20) ? (1u << 20) : n);
        if (k > 0) r->in_off += (size_t)k;
        else if (k < 0 && errno == EINTR) continue;
        else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        else break; /* EPIPE: the child stopped reading; that is its business */
    }
    io_close(w);
}

static int buf_reserve(struct buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return 0;
    size_t cap = b->cap ? b->cap : READ_CHUNK;
    while (cap - b->len < extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Output past max_output (or no memory for it): keep what fits, stop the child. */
static void run_overflow(struct run *r, ev_io *w, struct buf *b, int which) {
    if (b->len > r->max_output) b->len = r->max_output;
    if (!r->overflow) r->overflow = which;
    io_close(w);
    run_kill(r);
    run_check_done(r);
}

static void run_read(struct run *r, ev_io *w, struct buf *b, int which) {
    for (int rounds = 0; rounds < 16; rounds++) { /* then let the loop serve others */
        if (buf_reserve(b, READ_CHUNK) != 0) {
            run_overflow(r, w, b, which);
            return;
        }
        ssize_t n = read(w->fd, b->p + b->len, READ_CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) { /* EOF, or an error we cannot do better with */
            io_close(w);
            run_check_done(r);
            return;
        }
        b->len += (size_t)n;
        if (b->len > r->max_output) {
            run_overflow(r, w, b, which);
            return;
        }
    }
}

static void run_on_stdout(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    struct run *r = OWNER(w, struct run, out_w);
    run_read(r, w, &r->out, 1);
}

static void run_on_stderr(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    struct run *r = OWNER(w, struct run, err_w);
    run_read(r, w, &r->err, 2);
}

/* A cancelled task: drop the pipes, stop the child; it is reaped in the background. */
static void run_cancel(void *ud) {
    struct run *r = ud;
    r->task = NULL;
    io_close(&r->in_w);
    io_close(&r->out_w);
    io_close(&r->err_w);
    run_kill(r);
    run_check_done(r);
}

static void run_free_bufs(struct run *r) {
    free(r->out.p);
    free(r->err.p);
    memset(&r->out, 0, sizeof r->out);
    memset(&r->err, 0, sizeof r->err);
}

/* __gc of a proc.run: only at lua_close can a live run be collected (it is anchored until
 * done).  [-0, +0, e] */
static int l_run_gc(lua_State *L) {
    struct run *r = luaL_checkudata(L, 1, RUN_MT);
    struct ev_loop *ev = loop_ev();
    ev_child_stop(ev, &r->child);
    ev_timer_stop(ev, &r->kill_timer);
    ev_timer_stop(ev, &r->linger_timer);
    io_close(&r->in_w);
    io_close(&r->out_w);
    io_close(&r->err_w);
    if (r->pid > 0 && !r->reaped) {
        kill(-r->pid, SIGKILL);
        while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR) {}
        r->reaped = 1;
    }
    run_free_bufs(r);
    return 0;
}

/* proc.run's continuation: the child is reaped and its output read. Stack: opts, run, stdin,
 * prog.  [-0, +1|3, m] */
static int l_proc_run_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    struct run *r = lua_touserdata(L, 2);
    lua_createtable(L, 0, 6);
    set_status_fields(L, r->status);
    lua_pushlstring(L, r->out.p ? r->out.p : "", r->out.len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, r->err.p ? r->err.p : "", r->err.len);
    lua_setfield(L, -2, "stderr");
    lua_pushnumber(L, r->ended - r->started);
    lua_setfield(L, -2, "time");
    lua_pushinteger(L, r->pid);
    lua_setfield(L, -2, "pid");
    run_free_bufs(r);
    if (!r->overflow && !r->timed_out) return 1;
    lua_pushnil(L);
    if (r->overflow)
        lua_pushfstring(L, "%s of '%s' exceeded %I bytes", r->overflow == 1 ? "stdout" : "stderr", lua_tostring(L, 4),
                        (lua_Integer)r->max_output);
    else lua_pushfstring(L, "timed out after %f s", r->timeout);
    lua_rotate(L, -3, -1); /* nil, message, partial */
    return 3;
}

static const char *const run_keys[] = {"argv", "stdin", "timeout", "env", "cwd", "max_output", "grace", NULL};

static void run_init(struct run *r) {
    memset(r, 0, sizeof *r);
    r->ref = LUA_NOREF;
    r->pid = -1;
    ev_io_init(&r->in_w, run_on_stdin, -1, EV_WRITE);
    ev_io_init(&r->out_w, run_on_stdout, -1, EV_READ);
    ev_io_init(&r->err_w, run_on_stderr, -1, EV_READ);
    ev_init(&r->kill_timer, run_on_kill_timer);
    ev_init(&r->linger_timer, run_on_linger);
}

/* The pipes of a run: child ends in cfd (to become 0-2), parent ends in the watchers. */
static int run_pipes(struct run *r, int has_stdin, int cfd[3]) {
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    int rc = has_stdin ? make_pipe(in) : ((in[0] = open_devnull()) < 0 ? -1 : 0);
    if (rc == 0) rc = make_pipe(out);
    if (rc == 0) rc = make_pipe(err);
    if (rc != 0) {
        int e = errno;
        int *all[] = {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1]};
        for (int i = 0; i < 6; i++) close_fd(all[i]);
        errno = e;
        return -1;
    }
    cfd[0] = in[0], cfd[1] = out[1], cfd[2] = err[1];
    r->in_w.fd = in[1], r->out_w.fd = out[0], r->err_w.fd = err[0];
    return 0;
}

static void run_start_watchers(struct run *r) {
    struct ev_loop *ev = loop_ev();
    ev_child_init(&r->child, run_on_exit, r->pid, 0);
    ev_child_start(ev, &r->child);
    if (r->in_w.fd >= 0 && r->in_len == 0) io_close(&r->in_w); /* stdin = "": EOF now */
    ev_io *ws[3] = {&r->in_w, &r->out_w, &r->err_w};
    for (int i = 0; i < 3; i++) {
        if (ws[i]->fd < 0) continue;
        set_nonblock(ws[i]->fd);
        ev_io_set(ws[i], ws[i]->fd, i ? EV_READ : EV_WRITE);
        ev_io_start(ev, ws[i]);
    }
    if (r->timeout >= 0) timer_arm(&r->kill_timer, r->timeout);
}

/* proc.run{argv=, stdin=, timeout=, env=, cwd=, max_output=, grace=}  [-0, +1|2|3, e] */
static int l_proc_run(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    check_keys(L, 1, "proc.run", run_keys);
    check_task_context(L, "proc.run");
    struct run *r = lua_newuserdatauv(L, sizeof *r, 0); /* 2 */
    run_init(r);
    luaL_setmetatable(L, RUN_MT);
    lua_getfield(L, 1, "stdin"); /* 3 */
    if (!lua_isnil(L, 3) && lua_type(L, 3) != LUA_TSTRING) luaL_error(L, "proc.run: stdin must be a string");
    r->in_data = lua_tolstring(L, 3, &r->in_len);
    r->timeout = field_seconds(L, 1, "timeout", -1, "proc.run: timeout");
    r->grace = field_seconds(L, 1, "grace", DEFAULT_GRACE, "proc.run: grace");
    r->max_output = field_bytes(L, 1, "max_output", DEFAULT_MAX_OUTPUT, "proc.run: max_output");
    struct exec_req x;
    read_exec_req(L, 1, "proc.run", &x); /* 4..7 */
    lua_pushstring(L, x.argv[0]);        /* 8: the program, for messages */
    lua_pushvalue(L, 2);
    r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (run_pipes(r, r->in_data != NULL, x.stdio) != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
        r->ref = LUA_NOREF;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot run '%s': pipe: %s", x.argv[0], strerror(errno));
        return 2;
    }
    char err[512];
    r->started = mono_now();
    r->pid = spawn_process(&x, err, sizeof err);
    for (int i = 0; i < 3; i++) close(x.stdio[i]);
    if (r->pid < 0) {
        io_close(&r->in_w);
        io_close(&r->out_w);
        io_close(&r->err_w);
        luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
        r->ref = LUA_NOREF;
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    run_start_watchers(r);
    lua_replace(L, 4);
    lua_settop(L, 4);
    r->task = loop_park(L, run_cancel, r);
    return lua_yieldk(L, 0, 0, l_proc_run_k);
}

/* ---- proc.spawn and child handles ----------------------------------------------------- */

struct waiter;

struct child {
    ev_child w;
    pid_t pid;
    int reaped, status;
    int ref; /* registry anchor while the process runs */
    struct waiter *waiters;
};

/* A task in child:wait; the userdata lives on that task's stack while it waits. */
struct waiter {
    ev_timer timer;
    task *task;
    struct child *c;
    struct waiter *next, **pprev;
};

static void waiter_unlink(struct waiter *w) {
    ev_timer_stop(loop_ev(), &w->timer);
    if (w->pprev) *w->pprev = w->next;
    if (w->next) w->next->pprev = w->pprev;
    w->next = NULL;
    w->pprev = NULL;
}

static void child_on_exit(struct ev_loop *ev, ev_child *w, int revents) {
    (void)revents;
    struct child *c = OWNER(w, struct child, w);
    ev_child_stop(ev, w);
    c->reaped = 1;
    c->status = w->rstatus;
    while (c->waiters) {
        struct waiter *wt = c->waiters;
        waiter_unlink(wt);
        loop_ready(wt->task, 0);
    }
    luaL_unref(loop_lua(), LUA_REGISTRYINDEX, c->ref);
    c->ref = LUA_NOREF;
}

static void waiter_on_timeout(struct ev_loop *ev, ev_timer *t, int revents) {
    (void)ev;
    (void)revents;
    struct waiter *w = OWNER(t, struct waiter, timer);
    waiter_unlink(w);
    loop_ready(w->task, 0);
}

static void waiter_cancel(void *ud) { waiter_unlink(ud); }

static struct child *check_child(lua_State *L) { return luaL_checkudata(L, 1, CHILD_MT); }

/* code, nil | nil, signal  [-0, +2, -] */
static int push_exit(lua_State *L, int status) {
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        push_signal_name(L, WTERMSIG(status));
    }
    return 2;
}

/* child:wait's continuation: the child was reaped, or the timeout fired  [-0, +2, e] */
static int l_child_wait_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    struct child *c = check_child(L);
    if (c->reaped) return push_exit(L, c->status);
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
}

/* child:wait([timeout]) -> code, nil | nil, signal | nil, "timeout"  [-0, +2, e] */
static int l_child_wait(lua_State *L) {
    struct child *c = check_child(L);
    double timeout = check_seconds_at(L, 2, -1, "child:wait: timeout");
    if (c->reaped) return push_exit(L, c->status);
    check_task_context(L, "child:wait");
    lua_settop(L, 2);
    struct waiter *w = lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    w->c = c;
    w->next = c->waiters;
    if (w->next) w->next->pprev = &w->next;
    w->pprev = &c->waiters;
    c->waiters = w;
    ev_init(&w->timer, waiter_on_timeout);
    if (timeout >= 0) timer_arm(&w->timer, timeout);
    w->task = loop_park(L, waiter_cancel, w);
    return lua_yieldk(L, 0, 0, l_child_wait_k);
}

/* child:pid() -> pid  [-0, +1, e] */
static int l_child_pid(lua_State *L) {
    lua_pushinteger(L, check_child(L)->pid);
    return 1;
}

/* child:running() -> bool  [-0, +1, e] */
static int l_child_running(lua_State *L) {
    lua_pushboolean(L, !check_child(L)->reaped);
    return 1;
}

/* child:kill([sig = "TERM"]) -> true | nil, err  [-0, +1|2, e] */
static int l_child_kill(lua_State *L) {
    struct child *c = check_child(L);
    int sig = check_signal(L, 2, SIGTERM);
    if (c->reaped) {
        lua_pushnil(L);
        lua_pushfstring(L, "process %d has exited", (int)c->pid);
        return 2;
    }
    if (kill(-c->pid, sig) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "kill %d: %s", (int)c->pid, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Reaches a running child only when the Lua state closes (it is anchored while it runs):
 * TERM its group, give it EXIT_GRACE seconds, then KILL. Blocking, but only at exit.  [-0, +0, e] */
static int l_child_gc(lua_State *L) {
    struct child *c = luaL_checkudata(L, 1, CHILD_MT);
    ev_child_stop(loop_ev(), &c->w);
    while (c->waiters) waiter_unlink(c->waiters);
    if (c->pid <= 0 || c->reaped) return 0;
    kill(-c->pid, SIGTERM);
    double until = mono_now() + EXIT_GRACE;
    for (;;) {
        pid_t p = waitpid(c->pid, NULL, WNOHANG);
        if (p == c->pid || (p < 0 && errno != EINTR)) break;
        if (mono_now() >= until) {
            kill(-c->pid, SIGKILL);
            while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {}
            break;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    c->reaped = 1;
    return 0;
}

/* __tostring of a child: "child <pid> (running)" or "(exited)"  [-0, +1, e] */
static int l_child_tostring(lua_State *L) {
    struct child *c = check_child(L);
    lua_pushfstring(L, "child %d (%s)", (int)c->pid, c->reaped ? "exited" : "running");
    return 1;
}

/* The descriptor a spawn option names: "inherit", "null" or a path opened for appending.
 * Returns -1 with errno on failure; *owned says whether the caller closes it. */
static int spawn_output(const char *spec, int inherit_fd, int devnull, int *owned) {
    *owned = 0;
    if (!strcmp(spec, "inherit")) return inherit_fd;
    if (!strcmp(spec, "null")) return devnull;
    *owned = 1;
    return fd_above_stdio(open(spec, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
}

static const char *field_output(lua_State *L, int opts, const char *key) {
    lua_getfield(L, opts, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return "inherit";
    }
    if (lua_type(L, -1) != LUA_TSTRING || !*lua_tostring(L, -1))
        luaL_error(L, "proc.spawn: %s must be a path, \"inherit\" or \"null\"", key);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* anchored by opts */
    return s;
}

static const char *const spawn_keys[] = {"argv", "stdout", "stderr", "env", "cwd", NULL};

/* proc.spawn{argv=, stdout=, stderr=, env=, cwd=} -> child | nil, err  [-0, +1|2, e] */
static int l_proc_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    check_keys(L, 1, "proc.spawn", spawn_keys);
    const char *out_spec = field_output(L, 1, "stdout");
    const char *err_spec = field_output(L, 1, "stderr");
    struct exec_req x;
    read_exec_req(L, 1, "proc.spawn", &x);                /* 2..5 */
    struct child *c = lua_newuserdatauv(L, sizeof *c, 0); /* 6 */
    memset(c, 0, sizeof *c);
    c->ref = LUA_NOREF;
    luaL_setmetatable(L, CHILD_MT);
    int devnull = open_devnull(), owned_out = 0, owned_err = 0;
    int out = -1, errfd = -1;
    const char *failed = NULL;
    if (devnull < 0) failed = "/dev/null";
    else if ((out = spawn_output(out_spec, 1, devnull, &owned_out)) < 0) failed = out_spec;
    else if (!strcmp(out_spec, err_spec) && strcmp(out_spec, "inherit")) errfd = out; /* same file: share it */
    else if ((errfd = spawn_output(err_spec, 2, devnull, &owned_err)) < 0) failed = err_spec;
    char err[512];
    if (failed) {
        snprintf(err, sizeof err, "%s: %s", failed, strerror(errno));
    } else {
        x.stdio[0] = devnull, x.stdio[1] = out, x.stdio[2] = errfd;
        c->pid = spawn_process(&x, err, sizeof err);
    }
    if (owned_out) close(out);
    if (owned_err) close(errfd);
    if (devnull >= 0) close(devnull);
    if (failed || c->pid < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    ev_child_init(&c->w, child_on_exit, c->pid, 0);
    ev_child_start(loop_ev(), &c->w);
    lua_pushvalue(L, 6);
    c->ref = luaL_ref(L, LUA_REGISTRYINDEX); /* on failure (no memory) the handle is collectable */
    return 1;
}

/* ---- module ----------------------------------------------------------------------------- */

static const luaL_Reg child_methods[] = {
    {"pid", l_child_pid}, {"running", l_child_running}, {"wait", l_child_wait}, {"kill", l_child_kill}, {NULL, NULL},
};

static const luaL_Reg proc_funcs[] = {
    {"run", l_proc_run},
    {"spawn", l_proc_spawn},
    {NULL, NULL},
};

/* require "rollout.proc" -> module  [-0, +1, m] */
int luaopen_rollout_proc(lua_State *L) {
    /* A child that stops reading its stdin must give us EPIPE, not kill the host. Children
     * get the default disposition back before exec. */
    signal(SIGPIPE, SIG_IGN);
    if (luaL_newmetatable(L, RUN_MT)) {
        lua_pushcfunction(L, l_run_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, CHILD_MT)) {
        luaL_newlib(L, child_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_child_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_child_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newlib(L, proc_funcs);
    return 1;
}
