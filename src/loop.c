/* loop.c: the scheduler behind the `rollout` namespace (rollout.core).
 *
 * One libev loop and one lua_State. Every piece of Lua that may wait runs as a task: a Lua
 * coroutine that the scheduler resumes when what it waits for is done. A C binding that waits
 * parks the task (loop_park) and yields; when its operation completes it pushes the results on
 * the task's coroutine and calls loop_ready. Ready tasks are resumed from the scheduler loop,
 * never from inside a library callback, so a resumed task may start operations freely.
 *
 * Clock: `real` is CLOCK_MONOTONIC, so holds survive the wall clock being set back. Under
 * `virtual`, when no task is ready and no I/O is pending, the clock jumps to the next timer
 * deadline, so an hour of sleeps takes no wall time. Both clocks read seconds since start.
 *
 * Lua API (all in rollout.core; lua/rollout/init.lua adds helpers on top):
 *   spawn(fn, ...) -> task           run fn(...) as a new task (starts on the next turn)
 *   sleep(seconds)                   wait on the clock
 *   suspend([timeout]) -> ...        park until wake(task, ...) (or nil, "timeout")
 *   wake(task, ...) -> bool          ready a task parked by suspend, with values
 *   current() -> task|nil            the running task
 *   now() / time()                   scheduler seconds since start / epoch seconds
 *   clock([name]) -> name            read or set "real" | "virtual"
 *   wait_signal(name, ... [, timeout]) -> name|nil   wait for SIGINT/SIGTERM/SIGHUP/SIGUSR1/2
 *   task:wait([timeout]) -> ...      the task's results; raises its error; nil, "timeout"
 *   task:result() -> state, ...      non-blocking: "done", results | "failed", err | state
 *   task:cancel([reason]) -> bool    stop a task wherever it waits (its op is released)
 *   task:state() / task:id()
 *
 * Errors: calling a waiting function outside a task, or bad arguments, raise. A task that
 * fails with nobody waiting for it prints its error and traceback to stderr.
 */
#include "rollout/loop.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#define TASK_MT "rollout.core.task"

enum task_state { T_READY, T_RUNNING, T_WAITING, T_DONE, T_FAILED, T_CANCELLED };
static const char *const state_names[] = {"ready", "running", "waiting", "done", "failed", "cancelled"};

/* What a parked task waits for decides whether the virtual clock may jump past it. */
enum wait_kind { W_NONE, W_IO, W_EXT };

struct task {
    lua_State *co;
    int ref; /* registry anchor while not finished */
    int state;
    int nargs; /* values on co's stack for the next resume */
    long id;
    task *next; /* ready queue */
    int wait_kind;
    int suspended;        /* parked by suspend(): wake() may resume it */
    int timeout_is_sleep; /* deadline fires with no values (sleep) or nil,"timeout" */
    task_cancel_fn cancel;
    void *cancel_ud;
    double deadline;
    unsigned long seq;
    int heap_idx;         /* -1 when not in the timer heap */
    int joiners;          /* tasks waiting in task:wait() */
    task *waiting_on;     /* the task this one waits for in task:wait() */
    const char *fail_msg; /* set: the next resume fails the task with this instead */
};

static struct {
    lua_State *L;
    struct ev_loop *ev;
    ev_timer wakeup;
    int virtual_clock;
    double vnow;
    struct timespec mono0;
    double wall0;
    task *ready_head, *ready_tail;
    task **heap;
    int heap_len, heap_cap;
    unsigned long seq;
    long next_id;
    int io_pending, ext_pending;
    task *main_task;
    task *running;
} S;

/* ---- clock ---------------------------------------------------------------------- */

static double mono_since_start(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)(ts.tv_sec - S.mono0.tv_sec) + (double)(ts.tv_nsec - S.mono0.tv_nsec) / 1e9;
}

double loop_now(void) { return S.virtual_clock ? S.vnow : mono_since_start(); }
double loop_wall(void) { return S.wall0 + loop_now(); }
int loop_is_virtual(void) { return S.virtual_clock; }
struct ev_loop *loop_ev(void) {
    return S.ev;
}
lua_State *loop_lua(void) { return S.L; }

/* ---- timer heap (min-heap on deadline, FIFO among equal deadlines) --------------- */

static int heap_less(const task *a, const task *b) {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_swap(int i, int j) {
    task *t = S.heap[i];
    S.heap[i] = S.heap[j];
    S.heap[j] = t;
    S.heap[i]->heap_idx = i;
    S.heap[j]->heap_idx = j;
}

static void heap_up(int i) {
    while (i > 0 && heap_less(S.heap[i], S.heap[(i - 1) / 2])) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < S.heap_len && heap_less(S.heap[l], S.heap[m])) m = l;
        if (r < S.heap_len && heap_less(S.heap[r], S.heap[m])) m = r;
        if (m == i) return;
        heap_swap(i, m);
        i = m;
    }
}

static void heap_push(task *t) {
    if (S.heap_len == S.heap_cap) {
        int cap = S.heap_cap ? S.heap_cap * 2 : 64;
        task **h = realloc(S.heap, (size_t)cap * sizeof *h);
        if (!h) abort(); /* out of memory in the scheduler: nothing sane to do */
        S.heap = h;
        S.heap_cap = cap;
    }
    t->seq = S.seq++;
    t->heap_idx = S.heap_len;
    S.heap[S.heap_len++] = t;
    heap_up(t->heap_idx);
}

static void heap_remove(task *t) {
    int i = t->heap_idx;
    if (i < 0) return;
    t->heap_idx = -1;
    S.heap_len--;
    if (i == S.heap_len) return;
    S.heap[i] = S.heap[S.heap_len];
    S.heap[i]->heap_idx = i;
    heap_up(i);
    heap_down(S.heap[i]->heap_idx);
}

/* ---- task bookkeeping ----------------------------------------------------------- */

task *loop_task_of(lua_State *L) { return *(task **)lua_getextraspace(L); }
lua_State *task_thread(task *t) { return t->co; }
int task_is_running(task *t) { return t->state == T_RUNNING; }

static void ready_push(task *t, int nargs) {
    t->state = T_READY;
    t->nargs = nargs;
    t->next = NULL;
    if (S.ready_tail) S.ready_tail->next = t;
    else S.ready_head = t;
    S.ready_tail = t;
}

static void unpark(task *t) {
    if (t->wait_kind == W_IO) S.io_pending--;
    else if (t->wait_kind == W_EXT) S.ext_pending--;
    t->wait_kind = W_NONE;
    t->suspended = 0;
    t->cancel = NULL;
    t->cancel_ud = NULL;
    heap_remove(t);
}

void loop_ready(task *t, int nresults) {
    if (t->state != T_WAITING) return; /* cancelled meanwhile: results are dropped */
    unpark(t);
    ready_push(t, nresults);
}

/* Room for n more values on t's stack, or t is readied to fail with a stack overflow
 * (its wait's results cannot be delivered) and 0 is returned: the caller pushes nothing. */
int loop_reserve(task *t, int n) {
    if (lua_checkstack(t->co, n)) return 1;
    if (t->state == T_WAITING) {
        t->fail_msg = "stack overflow: the task's stack cannot take the results of its wait";
        loop_ready(t, 0);
    }
    return 0;
}

static task *check_in_task(lua_State *L, const char *what) {
    task *t = loop_task_of(L);
    if (!t || t->co != L)
        luaL_error(L,
                   "%s must be called from a task (rollout.spawn or the main script), "
                   "not from a plain coroutine",
                   what);
    return t;
}

/* Raise unless L is a running task that may yield here. Call it before starting an
 * operation, so a refusal leaves nothing behind. */
task *loop_check_can_park(lua_State *L, const char *what) {
    task *t = check_in_task(L, what);
    if (t->state != T_RUNNING) luaL_error(L, "%s cannot wait while its task is being cancelled", what);
    if (!lua_isyieldable(L))
        luaL_error(L,
                   "%s cannot wait here (inside a metamethod, an iterator or a C function "
                   "such as table.sort's comparator)",
                   what);
    return t;
}

static task *park(lua_State *L, int kind, task_cancel_fn cancel, void *ud) {
    task *t = loop_check_can_park(L, "a waiting function");
    t->state = T_WAITING;
    t->wait_kind = kind;
    t->cancel = cancel;
    t->cancel_ud = ud;
    if (kind == W_IO) S.io_pending++;
    else if (kind == W_EXT) S.ext_pending++;
    return t;
}

task *loop_park(lua_State *L, task_cancel_fn cancel, void *ud) { return park(L, W_IO, cancel, ud); }

task *loop_park_idle(lua_State *L, task_cancel_fn cancel, void *ud) { return park(L, W_EXT, cancel, ud); }

/* Push the task's uservalue table {co=, results=, err=, waiters=}. */
static void push_box(lua_State *L, task *t) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    lua_getiuservalue(L, -1, 1);
    lua_remove(L, -2);
}

/* Wake every task blocked in task:wait() on t. Called with t's userdata reachable. */
static void wake_joiners(lua_State *L, task *t) {
    if (!t->joiners) return;
    push_box(L, t);
    lua_getfield(L, -1, "waiters");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            task *j = luaL_testudata(L, -2, TASK_MT);
            if (j) loop_ready(j, 0);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 2);
    t->joiners = 0;
}

/* A finished task drops its anchor; its results stay in the box for whoever holds it.
 * A task still linked in the ready queue keeps its anchor until run_ready unlinks it. */
static void release(lua_State *L, task *t) {
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
}

static void finish_queued(lua_State *L, task *t, int state, int queued) {
    t->state = state;
    wake_joiners(L, t);
    if (!queued) release(L, t);
}

static void finish(lua_State *L, task *t, int state) { finish_queued(L, t, state, t->state == T_READY); }

/* ---- resuming ------------------------------------------------------------------- */

static void report_failure(lua_State *L, task *t, const char *msg) {
    if (t == S.main_task || t->joiners) return;
    fprintf(stderr, "rollout: task %ld failed: %s\n", t->id, msg);
    (void)L;
}

static void store_results(lua_State *L, task *t, int nres) {
    push_box(L, t);
    lua_createtable(L, nres, 1);
    int tbl = lua_gettop(L);
    lua_xmove(t->co, L, nres);
    for (int i = nres; i >= 1; i--) lua_rawseti(L, tbl, i);
    lua_pushinteger(L, nres);
    lua_setfield(L, -2, "n");
    lua_setfield(L, -2, "results");
    lua_pop(L, 1);
}

/* The error on top of t->co becomes the task's: box.err (message and traceback) and
 * box.errvalue (the value itself). Nothing is pushed on t->co, whose stack may be full
 * (a stack overflow). [-0, +0, m] on L */
static void store_error(lua_State *L, task *t) {
    int et = lua_type(t->co, -1);
    if (!lua_checkstack(L, 6)) abort(); /* the scheduler's own stack: a few slots, always there */
    if (et == LUA_TSTRING || et == LUA_TNUMBER) {
        lua_pushvalue(t->co, -1);
        lua_xmove(t->co, L, 1); /* a copy: lua_tostring may convert a number in place */
        lua_pushstring(L, lua_tostring(L, -1));
        lua_remove(L, -2);
    } else {
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(t->co, -1));
    }
    luaL_traceback(L, t->co, lua_tostring(L, -1), 0); /* msg traceback */
    lua_remove(L, -2);
    push_box(L, t);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "err");
    lua_xmove(t->co, L, 1); /* the original error value, re-raised by task:wait */
    lua_setfield(L, -2, "errvalue");
    lua_pop(L, 1);
    report_failure(L, t, lua_tostring(L, -1));
    lua_pop(L, 1);
}

/* A parked task whose wait cannot be completed (loop_reserve) fails with `msg` where it
 * waits: its to-be-closed variables are closed, its joiners get the error. [-0, +0, m] */
static void fail_parked(lua_State *L, task *t, const char *msg) {
    if (!lua_checkstack(L, 6)) abort();
    luaL_traceback(L, t->co, msg, 0);
    push_box(L, t);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "err");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "errvalue");
    lua_pop(L, 1);
    t->state = T_FAILED; /* before __close handlers run: they cannot park it again */
    lua_resetthread(t->co);
    report_failure(L, t, lua_tostring(L, -1));
    lua_pop(L, 1);
    finish_queued(L, t, T_FAILED, 0);
}

static void resume_task(lua_State *L, task *t) {
    int nres = 0;
    if (t->fail_msg) {
        const char *msg = t->fail_msg;
        t->fail_msg = NULL;
        fail_parked(L, t, msg);
        return;
    }
    S.running = t;
    t->state = T_RUNNING;
    int rc = lua_resume(t->co, L, t->nargs, &nres);
    S.running = NULL;
    t->nargs = 0;
    if (rc == LUA_YIELD) {
        if (t->state == T_RUNNING) { /* a bare coroutine.yield(): give others a turn */
            lua_pop(t->co, nres);
            ready_push(t, 0);
        }
        return;
    }
    if (t->state == T_CANCELLED) return; /* finished already by cancel() */
    if (rc == LUA_OK && !lua_checkstack(L, nres + 4)) {
        lua_pop(t->co, nres); /* more results than a stack can hold: a failure, not a crash */
        lua_pushliteral(t->co, "task returned too many results");
        rc = LUA_ERRRUN;
    }
    if (rc == LUA_OK) {
        store_results(L, t, nres);
        finish(L, t, T_DONE);
    } else {
        store_error(L, t);
        finish(L, t, T_FAILED);
    }
}

static void run_ready(lua_State *L) {
    while (S.ready_head) {
        task *t = S.ready_head;
        S.ready_head = t->next;
        if (!S.ready_head) S.ready_tail = NULL;
        t->next = NULL;
        if (t->state == T_READY) resume_task(L, t);
        else if (t->ref != LUA_NOREF && t->state != T_RUNNING && t->state != T_WAITING)
            release(L, t); /* cancelled while queued */
    }
}

static void fire_due_timers(void) {
    double now = loop_now();
    while (S.heap_len && S.heap[0]->deadline <= now) {
        task *t = S.heap[0];
        int sleep = t->timeout_is_sleep;
        task_cancel_fn fn = t->cancel;
        void *ud = t->cancel_ud;
        unpark(t);
        if (fn) fn(ud); /* a wait with a timeout releases what it waited on */
        if (sleep) {
            ready_push(t, 0);
        } else if (!lua_checkstack(t->co, 2)) {
            t->fail_msg = "stack overflow: the task's stack cannot take the results of its wait";
            ready_push(t, 0);
        } else {
            lua_pushnil(t->co);
            lua_pushliteral(t->co, "timeout");
            ready_push(t, 2);
        }
    }
}

/* ---- spawning ------------------------------------------------------------------- */

/* __gc of a task: the task lives in its userdata, nothing else to free  [-0, +0, -] */
static int l_task_gc(lua_State *L) {
    (void)L;
    return 0;
}

/* Create a task running the function at `fidx` with `nargs` values above it. [-0, +1, m] */
static task *spawn(lua_State *L, int fidx, int nargs) {
    fidx = lua_absindex(L, fidx);
    task *t = lua_newuserdatauv(L, sizeof *t, 1);
    memset(t, 0, sizeof *t);
    t->heap_idx = -1;
    t->id = ++S.next_id;
    luaL_setmetatable(L, TASK_MT);
    lua_createtable(L, 0, 4);
    t->co = lua_newthread(L);
    *(task **)lua_getextraspace(t->co) = t;
    lua_setfield(L, -2, "co");
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, -1);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!lua_checkstack(t->co, nargs + 1)) luaL_error(L, "spawn: too many arguments");
    lua_pushvalue(L, fidx);
    lua_xmove(L, t->co, 1);
    for (int i = 1; i <= nargs; i++) lua_pushvalue(L, fidx + i);
    lua_xmove(L, t->co, nargs);
    ready_push(t, nargs);
    return t;
}

/* rollout.spawn(fn, ...) -> task  [-0, +1, e] */
static int l_core_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    spawn(L, 1, lua_gettop(L) - 1);
    return 1;
}

/* ---- waiting -------------------------------------------------------------------- */

static double check_seconds(lua_State *L, int idx) {
    double s = luaL_checknumber(L, idx);
    if (!(s >= 0)) luaL_argerror(L, idx, "seconds must be >= 0");
    return s;
}

static void arm_deadline(task *t, double seconds, int is_sleep) {
    t->deadline = loop_now() + seconds;
    t->timeout_is_sleep = is_sleep;
    heap_push(t);
}

/* rollout.sleep(seconds)  [-0, +0, e] */
static int l_core_sleep(lua_State *L) {
    double s = check_seconds(L, 1);
    task *t = park(L, W_NONE, NULL, NULL);
    arm_deadline(t, s, 1);
    return lua_yield(L, 0);
}

/* rollout.suspend([timeout]) -> values from wake, or nil, "timeout"  [-0, +?, e] */
static int l_core_suspend(lua_State *L) {
    double s = lua_isnoneornil(L, 1) ? -1 : check_seconds(L, 1);
    task *t = park(L, W_NONE, NULL, NULL);
    t->suspended = 1;
    if (s >= 0) arm_deadline(t, s, 0);
    lua_settop(L, 0);
    return lua_yield(L, 0);
}

static task *check_task(lua_State *L, int idx) { return luaL_checkudata(L, idx, TASK_MT); }

/* rollout.wake(task, ...) -> true if it was suspended  [-0, +1, e] */
static int l_core_wake(lua_State *L) {
    task *t = check_task(L, 1);
    if (t->state != T_WAITING || !t->suspended) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int n = lua_gettop(L) - 1;
    if (!lua_checkstack(t->co, n)) /* nothing moved: the task stays suspended */
        return luaL_error(L, "wake: the task's stack cannot take %d more values", n);
    lua_xmove(L, t->co, n);
    loop_ready(t, n);
    lua_pushboolean(L, 1);
    return 1;
}

/* rollout.current() -> task|nil  [-0, +1, -] */
static int l_core_current(lua_State *L) {
    task *t = loop_task_of(L);
    if (!t || t->co != L || t->ref == LUA_NOREF) return lua_pushnil(L), 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    return 1;
}

/* rollout.now() -> seconds on the loop's clock (virtual or monotonic)  [-0, +1, -] */
static int l_core_now(lua_State *L) {
    lua_pushnumber(L, loop_now());
    return 1;
}
/* rollout.time() -> wall-clock seconds as the loop's clock sees them  [-0, +1, -] */
static int l_core_time(lua_State *L) {
    lua_pushnumber(L, loop_wall());
    return 1;
}

/* rollout.clock([name]) -> name  [-0, +1, e] */
static int l_core_clock(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) {
        static const char *const names[] = {"real", "virtual", NULL};
        int v = luaL_checkoption(L, 1, NULL, names);
        if (!v && S.virtual_clock) return luaL_error(L, "clock: a virtual clock cannot return to real time");
        /* start virtual time on a whole second: runs with the same seed stay bit-identical */
        if (v && !S.virtual_clock) S.vnow = ceil(mono_since_start());
        S.virtual_clock = v;
    }
    lua_pushstring(L, S.virtual_clock ? "virtual" : "real");
    return 1;
}

/* ---- task methods --------------------------------------------------------------- */

static void push_results(lua_State *L, int box, int *n) {
    lua_getfield(L, box, "results");
    lua_getfield(L, -1, "n");
    *n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, *n, "too many results");
    for (int i = 1; i <= *n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -*n - 1);
}

static int finished_results(lua_State *L, task *t, int box) {
    if (t->state == T_DONE) {
        int n;
        push_results(L, box, &n);
        return n;
    }
    lua_getfield(L, box, t->state == T_FAILED ? "errvalue" : "cancel_reason");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "cancelled");
    }
    return lua_error(L);
}

/* task:wait's continuation: the task ended, or the timeout fired  [-0, +?, e] */
static int l_task_wait_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    task *t = check_task(L, 1);
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 1);
    if (t->state == T_DONE || t->state == T_FAILED || t->state == T_CANCELLED) return finished_results(L, t, 2);
    /* woken by the timeout; joiner_cancel already took us off t's waiters */
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
}

/* A waiter that stops waiting (timeout or cancel) leaves the target's waiters, so the
 * target's end cannot wake it later and its failure is reported if nobody else waits. */
static void joiner_cancel(void *ud) {
    task *self = ud, *t = self->waiting_on;
    self->waiting_on = NULL;
    if (!t || t->ref == LUA_NOREF || self->ref == LUA_NOREF) return;
    lua_State *L = S.L;
    push_box(L, t);
    lua_getfield(L, -1, "waiters");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, self->ref);
        lua_pushnil(L);
        lua_rawset(L, -3);
    }
    lua_pop(L, 2);
    if (t->joiners > 0) t->joiners--;
}

/* task:wait([timeout]) -> results...  | raises the task's error | nil, "timeout"  [-0, +?, e] */
static int l_task_wait(lua_State *L) {
    task *t = check_task(L, 1);
    double timeout = lua_isnoneornil(L, 2) ? -1 : check_seconds(L, 2);
    lua_settop(L, 1);
    if (t->state == T_DONE || t->state == T_FAILED || t->state == T_CANCELLED) return l_task_wait_k(L, LUA_OK, 0);
    task *self = check_in_task(L, "task:wait");
    if (self == t) return luaL_error(L, "a task cannot wait for itself");
    lua_getiuservalue(L, 1, 1);
    lua_getfield(L, -1, "waiters");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "waiters");
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->ref);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_settop(L, 1);
    t->joiners++;
    self->waiting_on = t;
    park(L, W_NONE, joiner_cancel, self);
    if (timeout >= 0) arm_deadline(self, timeout, 1);
    return lua_yieldk(L, 0, 0, l_task_wait_k);
}

/* task:result() -> state, ...  [-0, +?, -] */
static int l_task_result(lua_State *L) {
    task *t = check_task(L, 1);
    lua_pushstring(L, state_names[t->state]);
    if (t->state != T_DONE && t->state != T_FAILED) return 1;
    lua_getiuservalue(L, 1, 1);
    int box = lua_gettop(L);
    if (t->state == T_FAILED) {
        lua_getfield(L, box, "errvalue");
        lua_getfield(L, box, "err");
        lua_remove(L, box);
        return 3;
    }
    int n;
    push_results(L, box, &n);
    lua_remove(L, box);
    return n + 1;
}

/* task:state() -> "ready" | "running" | "waiting" | "done" | "failed" | "cancelled"  [-0, +1, e] */
static int l_task_state(lua_State *L) {
    lua_pushstring(L, state_names[check_task(L, 1)->state]);
    return 1;
}

/* task:id() -> integer  [-0, +1, e] */
static int l_task_id(lua_State *L) {
    lua_pushinteger(L, check_task(L, 1)->id);
    return 1;
}

/* task:cancel([reason]) -> true if it was running  [-0, +1, e] */
static int l_task_cancel(lua_State *L) {
    task *t = check_task(L, 1);
    if (t->state == T_DONE || t->state == T_FAILED || t->state == T_CANCELLED) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (t->state == T_RUNNING || t == loop_task_of(L))
        return luaL_error(L, "a task cannot cancel itself (return or raise instead)");
    if (t->state == T_WAITING) {
        task_cancel_fn fn = t->cancel;
        void *ud = t->cancel_ud;
        unpark(t);
        if (fn) fn(ud);
    }
    lua_getiuservalue(L, 1, 1);
    if (lua_isnoneornil(L, 2)) lua_pushliteral(L, "cancelled");
    else lua_pushvalue(L, 2);
    lua_setfield(L, -2, "cancel_reason");
    lua_pop(L, 1);
    int queued = t->state == T_READY;
    t->state = T_CANCELLED;                   /* before __close handlers run: they cannot park it again */
    lua_resetthread(t->co);                   /* runs pending to-be-closed variables */
    finish_queued(L, t, T_CANCELLED, queued); /* if queued as ready, run_ready skips it */
    lua_pushboolean(L, 1);
    return 1;
}

/* __tostring of a task: "task <id> (<state>)"  [-0, +1, e] */
static int l_task_tostring(lua_State *L) {
    task *t = check_task(L, 1);
    lua_pushfstring(L, "task %d (%s)", (int)t->id, state_names[t->state]);
    return 1;
}

/* ---- signals -------------------------------------------------------------------- */

static const struct {
    const char *name;
    int signo;
} signal_names[] = {
    {"INT", SIGINT}, {"TERM", SIGTERM}, {"HUP", SIGHUP}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
};
#define NSIG_WATCHED (int)(sizeof signal_names / sizeof signal_names[0])

static struct sigslot {
    ev_signal w;
    int started;
    int pending; /* arrived while nobody waited */
} sigslots[NSIG_WATCHED];

/* Waiters: a registry table task -> {names...}; small, scanned on each signal. */
static int sig_waiters_ref = LUA_NOREF;

static int signal_index(const char *name) {
    if (!strncmp(name, "SIG", 3)) name += 3;
    for (int i = 0; i < NSIG_WATCHED; i++)
        if (!strcmp(name, signal_names[i].name)) return i;
    return -1;
}

static void deliver_signal(int i) {
    lua_State *L = S.L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, sig_waiters_ref);
    int delivered = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        task *t = luaL_testudata(L, -2, TASK_MT);
        lua_Integer mask = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (t && t->state == T_WAITING && (mask & (1 << i))) {
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -4);                 /* clearing the current key is allowed during lua_next */
            if (!loop_reserve(t, 1)) continue; /* t fails; the signal stays pending */
            lua_pushstring(t->co, signal_names[i].name);
            loop_ready(t, 1);
            delivered = 1;
        }
    }
    lua_pop(L, 1);
    if (!delivered) sigslots[i].pending++;
}

static void on_signal(struct ev_loop *ev, ev_signal *w, int revents) {
    (void)ev;
    (void)revents;
    deliver_signal((int)((struct sigslot *)w - sigslots)); /* w is the slot's first member */
}

static void watch_signal(int i) {
    if (sigslots[i].started) return;
    ev_signal_init(&sigslots[i].w, on_signal, signal_names[i].signo);
    ev_signal_start(S.ev, &sigslots[i].w);
    sigslots[i].started = 1;
}

static void sig_cancel(void *ud) {
    task *t = ud;
    lua_State *L = S.L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, sig_waiters_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* The signals named by the arguments, as a mask (each is watched from now on); a number as
 * the last argument is the timeout, its index goes to *timeout_idx.  [-0, +0, e] */
static int signal_mask(lua_State *L, int *timeout_idx) {
    int top = lua_gettop(L), mask = 0;
    *timeout_idx = 0;
    for (int a = 1; a <= top; a++) {
        if (lua_type(L, a) == LUA_TNUMBER && a == top) {
            *timeout_idx = a;
            break;
        }
        int i = signal_index(luaL_checkstring(L, a));
        if (i < 0) luaL_argerror(L, a, "unknown signal (INT, TERM, HUP, USR1, USR2)");
        mask |= 1 << i;
        watch_signal(i);
    }
    if (!mask) luaL_error(L, "wait_signal: name at least one signal");
    return mask;
}

/* rollout.watch_signal(name, ...): start catching them (queued until waited for)  [-0, +0, e] */
static int l_core_watch_signal(lua_State *L) {
    int tidx;
    signal_mask(L, &tidx);
    return 0;
}

/* rollout.wait_signal(name, ... [, timeout]) -> name | nil, "timeout"  [-0, +1|2, e] */
static int l_core_wait_signal(lua_State *L) {
    int tidx;
    int mask = signal_mask(L, &tidx);
    for (int i = 0; i < NSIG_WATCHED; i++) {
        if ((mask & (1 << i)) && sigslots[i].pending) {
            sigslots[i].pending--;
            lua_pushstring(L, signal_names[i].name);
            return 1;
        }
    }
    double timeout = tidx ? check_seconds(L, tidx) : -1;
    task *t = check_in_task(L, "wait_signal");
    lua_rawgeti(L, LUA_REGISTRYINDEX, sig_waiters_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    lua_pushinteger(L, mask);
    lua_rawset(L, -3);
    lua_settop(L, 0);
    park(L, W_EXT, sig_cancel, t);
    if (timeout >= 0) arm_deadline(t, timeout, 0);
    return lua_yield(L, 0);
}

static void create_task_metatable(lua_State *L);

/* ---- the loop ------------------------------------------------------------------- */

static void on_wakeup(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)w;
    (void)revents;
}

static int main_finished(void) {
    return S.main_task->state == T_DONE || S.main_task->state == T_FAILED || S.main_task->state == T_CANCELLED;
}

static void loop_turn(lua_State *L) {
    run_ready(L);
    if (main_finished()) return;
    fire_due_timers();
    if (S.ready_head) return;
    if (S.virtual_clock && S.io_pending == 0 && S.heap_len) {
        /* serve what is already there (a signal, a connection) before time jumps */
        ev_run(S.ev, EVRUN_NOWAIT);
        if (S.ready_head) return;
        if (S.heap[0]->deadline > S.vnow) S.vnow = S.heap[0]->deadline;
        fire_due_timers();
        return;
    }
    if (!S.heap_len && !S.io_pending && !S.ext_pending) {
        static const char deadlock[] = "deadlock: every task waits and nothing can wake any of them";
        if (!lua_checkstack(S.main_task->co, 1)) {
            fail_parked(L, S.main_task, deadlock);
            return;
        }
        lua_pushstring(S.main_task->co, deadlock);
        store_error(L, S.main_task);
        finish(L, S.main_task, T_FAILED);
        return;
    }
    if (S.heap_len && !S.virtual_clock) {
        double d = S.heap[0]->deadline - loop_now();
        ev_timer_set(&S.wakeup, d > 0 ? d : 0, 0);
        ev_timer_start(S.ev, &S.wakeup);
    }
    ev_run(S.ev, EVRUN_ONCE);
    ev_timer_stop(S.ev, &S.wakeup);
}

int loop_run_main(lua_State *L, int nargs, int *code) {
    int fidx = lua_gettop(L) - nargs;
    S.main_task = spawn(L, fidx, nargs);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S.main_task->ref);
    int anchor = luaL_ref(L, LUA_REGISTRYINDEX); /* keep the main task's box after it ends */
    lua_pop(L, 1 + nargs + 1);
    while (!main_finished()) loop_turn(L);
    task *t = S.main_task;
    lua_rawgeti(L, LUA_REGISTRYINDEX, anchor);
    lua_getiuservalue(L, -1, 1);
    int failed = t->state != T_DONE;
    *code = failed ? 3 : 0;
    if (failed) {
        lua_getfield(L, -1, "err");
        fprintf(stderr, "%s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "cancelled");
        lua_pop(L, 1);
    } else {
        lua_getfield(L, -1, "results");
        lua_rawgeti(L, -1, 1);
        if (lua_isinteger(L, -1)) *code = (int)lua_tointeger(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 2);
    luaL_unref(L, LUA_REGISTRYINDEX, anchor);
    return failed;
}

void loop_init(lua_State *L, int virtual_clock) {
    memset(&S, 0, sizeof S);
    S.L = L;
    S.ev = ev_default_loop(EVFLAG_AUTO);
    S.virtual_clock = virtual_clock;
    clock_gettime(CLOCK_MONOTONIC, &S.mono0);
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    S.wall0 = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    ev_timer_init(&S.wakeup, on_wakeup, 0, 0);
    *(task **)lua_getextraspace(L) = NULL;
    lua_newtable(L);
    sig_waiters_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    create_task_metatable(L); /* the main task exists before any require */
}

/* A signal the program caught stays harmless until the process exits: ev_signal_stop puts
 * back the default disposition, which would let a repeated Ctrl-C kill the process during
 * lua_close and lose the exit code it chose; those signals are ignored from here on. */
void loop_close(void) {
    sigset_t watched, old;
    sigemptyset(&watched);
    for (int i = 0; i < NSIG_WATCHED; i++)
        if (sigslots[i].started) sigaddset(&watched, signal_names[i].signo);
    sigprocmask(SIG_BLOCK, &watched, &old); /* no gap between the default and SIG_IGN */
    for (int i = 0; i < NSIG_WATCHED; i++) {
        if (!sigslots[i].started) continue;
        ev_signal_stop(S.ev, &sigslots[i].w);
        signal(signal_names[i].signo, SIG_IGN); /* a pending one is discarded */
        sigslots[i].started = 0;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(S.heap);
    S.heap = NULL;
}

static const luaL_Reg task_methods[] = {
    {"wait", l_task_wait},   {"result", l_task_result}, {"cancel", l_task_cancel},
    {"state", l_task_state}, {"id", l_task_id},         {NULL, NULL},
};

static const luaL_Reg core_funcs[] = {
    {"spawn", l_core_spawn},
    {"sleep", l_core_sleep},
    {"suspend", l_core_suspend},
    {"wake", l_core_wake},
    {"current", l_core_current},
    {"now", l_core_now},
    {"time", l_core_time},
    {"clock", l_core_clock},
    {"wait_signal", l_core_wait_signal},
    {"watch_signal", l_core_watch_signal},
    {NULL, NULL},
};

static void create_task_metatable(lua_State *L) {
    if (!luaL_newmetatable(L, TASK_MT)) {
        lua_pop(L, 1);
        return;
    }
    luaL_newlib(L, task_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_task_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, l_task_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

/* require "rollout.core" -> module  [-0, +1, m] */
int luaopen_rollout_core(lua_State *L) {
    create_task_metatable(L);
    luaL_newlib(L, core_funcs);
    return 1;
}
