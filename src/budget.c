/* budget.c: the `budget` namespace: run Lua code under an instruction and time budget.
 *
 * Lua API (require "rollout.budget"):
 *   budget.run(fn, opts, ...) -> fn's results    raises fn's error, or
 *       "budget exceeded: more than N instructions" / "budget exceeded: ran for more than S s"
 *   opts (nil or a table; unknown keys raise):
 *     instructions = N      VM instructions fn may run (default: no limit)
 *     seconds = S | "5s"    wall-clock seconds from the call (default: no limit)
 *     slice = S | false     preemption: after S seconds of running without waiting
 *                           (default 0.01), a task yields to the loop for one turn, so the
 *                           control socket and the triggers are served while it runs
 *
 * How: a count hook (lua_sethook, every 1000 instructions) on the calling thread, as Redis
 * bounds its scripts and lua.c stops a script on SIGINT. When the budget is spent the hook
 * raises the error, and from then on fires at every instruction, so a pcall inside fn that
 * catches the error cannot keep running: each level unwinds at its next instruction.
 * Preemption parks the task (loop_park, so the virtual clock does not jump) and yields from
 * the hook, which Lua 5.4 allows for count hooks; an ev_timer readies it on the next turn,
 * after the loop has polled its I/O. Only a task's own thread is preempted, and only where
 * it may yield (not inside a C call such as table.sort's comparator).
 *
 * The time budget is checked where instructions run: a task waiting (http.get, sleep) is not
 * interrupted by it; whoever waits for the task bounds that with a timeout (task:cancel).
 * Coroutines created inside fn inherit the hook and are charged to the budget that ran last
 * (the hook cannot carry a pointer); a coroutine that outlives its budget drops the hook.
 * Times are real (CLOCK_MONOTONIC), also under the virtual clock: they bound real work.
 *
 * Error policy: bad arguments raise; spending the budget raises the "budget exceeded" error
 * at the point fn had reached.
 */
#include "rollout/budget.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <ev.h>
#include <lauxlib.h>

#include "rollout/loop.h"
#include "rollout/units.h"

#define BUDGET_MT "rollout.budget.run" /* the state of one budget.run call */
#define STEP 1000

struct budget {
    lua_Integer limit; /* instructions; 0: none */
    lua_Integer used;
    double deadline; /* monotonic seconds; < 0: none */
    double seconds;
    double slice; /* <= 0: no preemption */
    double slice_start;
    int exceeded;
    int done;
    char why[96];
    lua_Hook old_hook;
    int old_mask, old_count;
    lua_State *owner;
    ev_timer timer;
    task *parked;
};

static char map_key;               /* registry: thread -> budget userdata (weak keys) */
static struct budget *last_hooked; /* the budget whose code ran last */

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void forget(struct budget *b) {
    if (last_hooked == b) last_hooked = NULL;
}

/* Push the registry's thread -> budget map. [-0, +1, m] */
static void push_map(lua_State *L) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &map_key) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &map_key);
}

/* The budget of thread L, without allocating (hooks run with little stack). */
static struct budget *budget_of(lua_State *L) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &map_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        return NULL;
    }
    lua_pushthread(L);
    lua_rawget(L, -2);
    struct budget *b = luaL_testudata(L, -1, BUDGET_MT);
    lua_pop(L, 2);
    return b;
}

/* ---- preemption ------------------------------------------------------------------ */

static void on_turn(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)revents;
    struct budget *b = (struct budget *)((char *)w - offsetof(struct budget, timer));
    ev_timer_stop(ev, w);
    task *t = b->parked;
    b->parked = NULL;
    b->slice_start = mono();
    if (t) loop_ready(t, 0);
}

static void preempt_cancel(void *ud) {
    struct budget *b = ud;
    ev_timer_stop(loop_ev(), &b->timer);
    b->parked = NULL;
}

/* Called from the hook: give the loop one turn if this thread is a task that may yield.
 * Returns 1 when the hook must end by yielding. */
static int preempt(lua_State *L, struct budget *b) {
    task *t = loop_task_of(L);
    if (!t || task_thread(t) != L || !lua_isyieldable(L) || !task_is_running(t)) return 0;
    b->parked = loop_park(L, preempt_cancel, b);
    ev_timer_set(&b->timer, 0., 0.);
    ev_timer_start(loop_ev(), &b->timer);
    return 1;
}

/* ---- the hook ------------------------------------------------------------------ */

/* Raise b->why at the line the code had reached (level 0: the hooked function itself). */
static void raise_exceeded(lua_State *L, struct budget *b) {
    lua_Debug d;
    if (lua_getstack(L, 0, &d) && lua_getinfo(L, "Sl", &d) && d.currentline > 0)
        lua_pushfstring(L, "%s:%d: %s", d.short_src, d.currentline, b->why);
    else lua_pushstring(L, b->why);
    lua_error(L);
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    struct budget *b = budget_of(L);
    if (!b) b = last_hooked; /* a coroutine created inside fn inherited the hook */
    if (!b || b->done) {
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    last_hooked = b;
    if (b->exceeded) {
        raise_exceeded(L, b);
        return;
    }
    b->used += STEP;
    double now = mono();
    if (b->limit > 0 && b->used > b->limit)
        snprintf(b->why, sizeof b->why, "budget exceeded: more than %lld instructions", (long long)b->limit);
    else if (b->deadline >= 0 && now > b->deadline)
        snprintf(b->why, sizeof b->why, "budget exceeded: ran for more than %g s", b->seconds);
    if (b->why[0]) {
        b->exceeded = 1;
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
        raise_exceeded(L, b);
        return;
    }
    if (b->slice > 0 && now - b->slice_start >= b->slice && preempt(L, b)) {
        lua_yield(L, 0); /* a hook yields by returning right after lua_yield */
        return;
    }
}

/* ---- run ----------------------------------------------------------------------- */

static double opt_seconds(lua_State *L, int idx, const char *key) {
    if (lua_type(L, idx) == LUA_TNUMBER) return lua_tonumber(L, idx);
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    double d;
    char err[128];
    if (!s) luaL_error(L, "budget.run: %s must be seconds or a duration string", key);
    if (units_duration(s, n, &d, err, sizeof err) != 0) luaL_error(L, "budget.run: %s: %s", key, err);
    return d;
}

static void read_opts(lua_State *L, int idx, struct budget *b) {
    b->limit = 0;
    b->deadline = -1;
    b->slice = 0.01;
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (!strcmp(k, "instructions")) {
            lua_Number n = luaL_checknumber(L, -1);
            if (!(n >= 1)) luaL_error(L, "budget.run: instructions must be >= 1");
            b->limit = n >= 9e18 ? 0 : (lua_Integer)n;
        } else if (!strcmp(k, "seconds")) {
            b->seconds = opt_seconds(L, lua_gettop(L), "seconds");
            if (!(b->seconds >= 0)) luaL_error(L, "budget.run: seconds must be >= 0");
            b->deadline = isinf(b->seconds) ? -1 : mono() + b->seconds;
        } else if (!strcmp(k, "slice")) {
            if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) b->slice = 0;
            else b->slice = opt_seconds(L, lua_gettop(L), "slice");
        } else {
            luaL_error(L, "budget.run: unknown option '%s' (instructions, seconds, slice)", k);
        }
        lua_pop(L, 1);
    }
}

/* End of the budgeted call: restore the hook and the map, then return or re-raise.  [-0, +?, e] */
static int l_budget_run_k(lua_State *L, int status, lua_KContext ctx) {
    int base = (int)ctx; /* the budget userdata's index; fn's results are above it */
    struct budget *b = luaL_checkudata(L, base, BUDGET_MT);
    b->done = 1;
    lua_sethook(L, b->old_hook, b->old_mask, b->old_count);
    push_map(L);
    lua_pushthread(L);
    lua_getiuservalue(L, base, 1); /* the budget this thread had before (nesting), or nil */
    lua_rawset(L, -3);
    lua_pop(L, 1);
    forget(b);
    if (status != LUA_OK && status != LUA_YIELD) return lua_error(L);
    return lua_gettop(L) - base;
}

/* __gc of a budget.run state  [-0, +0, e] */
static int l_budget_gc(lua_State *L) {
    struct budget *b = luaL_checkudata(L, 1, BUDGET_MT);
    if (ev_is_active(&b->timer)) ev_timer_stop(loop_ev(), &b->timer);
    b->done = 1;
    forget(b);
    return 0;
}

/* budget.run(fn, opts, ...) -> ...  [-0, +?, e] */
static int l_budget_run(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (lua_gettop(L) < 2) lua_settop(L, 2);
    int nargs = lua_gettop(L) - 2;
    struct budget *b = lua_newuserdatauv(L, sizeof *b, 1);
    memset(b, 0, sizeof *b);
    ev_timer_init(&b->timer, on_turn, 0., 0.);
    luaL_setmetatable(L, BUDGET_MT);
    int base = lua_gettop(L);
    read_opts(L, 2, b);
    b->owner = L;
    b->slice_start = mono();
    b->old_hook = lua_gethook(L);
    b->old_mask = lua_gethookmask(L);
    b->old_count = lua_gethookcount(L);
    push_map(L);
    lua_pushthread(L);
    lua_rawget(L, -2);
    lua_setiuservalue(L, base, 1);
    lua_pushthread(L);
    lua_pushvalue(L, base);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    last_hooked = b;
    luaL_checkstack(L, nargs + 1, "budget.run: too many arguments");
    lua_pushvalue(L, 1);
    for (int i = 0; i < nargs; i++) lua_pushvalue(L, 3 + i);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, STEP);
    int status = lua_pcallk(L, nargs, LUA_MULTRET, 0, base, l_budget_run_k);
    return l_budget_run_k(L, status, base);
}

static const luaL_Reg budget_funcs[] = {
    {"run", l_budget_run},
    {NULL, NULL},
};

/* require "rollout.budget" -> module  [-0, +1, m] */
int luaopen_rollout_budget(lua_State *L) {
    if (luaL_newmetatable(L, BUDGET_MT)) {
        lua_pushcfunction(L, l_budget_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, budget_funcs);
    return 1;
}
