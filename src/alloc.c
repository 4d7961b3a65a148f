/* alloc.c: the `alloc` namespace and the host's lua_Alloc: a global limit on the Lua heap and
 * memory caps for budgeted sections.
 *
 * Lua API (require "rollout.alloc"):
 *   alloc.run(fn, limit, ...) -> fn's results
 *       Runs fn(...) as a section capped at `limit` (bytes, or "64Mi", "512k"): the net bytes
 *       the Lua heap grows by while fn's thread runs. An allocation that would pass the cap
 *       fails, so Lua raises its memory error inside fn, at that point; from then on every
 *       allocation of the section fails (a pcall inside fn cannot keep going), and alloc.run
 *       raises "budget exceeded: more than <limit> of memory". Other errors pass through.
 *   alloc.stats() -> {total=, peak=, limit=, sections=}   bytes; limit 0 means none
 *   alloc.limit([bytes]) -> the global limit before the call; sets it when given (0: none)
 *
 * Which allocations a section pays for: those made while its thread runs, or while a
 * coroutine it resumed runs. The allocator knows no thread, so it asks each open section's
 * thread: running (or normal) means status LUA_OK with a frame on its stack; a task parked
 * in http.get or sleep is LUA_YIELD, and then the engine's ticks, the control socket and the
 * other tasks allocate on their own account, as they must: one hook's cap never fails
 * another's allocation. Frees while the thread runs count too (net bytes), including what the
 * collector frees then; when a cap is reached Lua first collects in full and retries, so
 * garbage never counts against a section, only what it keeps.
 *
 * Sections chain through their userdata (no allocation in the allocator); a section is
 * closed when fn returns or raises, and by __gc when its task was cancelled mid-way (the
 * thread, reset by the cancel, has no frame left, so it pays for nothing meanwhile).
 * Nesting works: each open section on the running thread pays.
 *
 * Error policy: bad arguments raise; running out of a section's cap raises in fn and then
 * from alloc.run; the global limit makes any allocation fail, as malloc failing would.
 */
#include "rollout/alloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "rollout/units.h"

#define SECTION_MT "rollout.alloc.section"

struct section {
    lua_State *thread;
    size_t cap;
    long long net; /* bytes; negative when fn freed more than it allocated */
    int exceeded, open;
    struct section *prev, *next;
};

static struct {
    size_t total, peak, limit;
    struct section *sections; /* open sections, newest first */
    int nsections;
} A;

/* Whether s's thread is running now (or resumed the coroutine that is). */
static int section_running(const struct section *s) {
    lua_Debug ar;
    return lua_status(s->thread) == LUA_OK && lua_getstack(s->thread, 0, &ar);
}

/* May the heap grow by `grow` bytes? Marks the section that refuses. */
static int may_grow(size_t grow) {
    if (A.limit && A.total + grow > A.limit) return 0;
    for (struct section *s = A.sections; s; s = s->next) {
        if (!section_running(s)) continue;
        if (s->exceeded || s->net + (long long)grow > (long long)s->cap) {
            s->exceeded = 1;
            return 0;
        }
    }
    return 1;
}

static void account(long long delta) {
    A.total = (size_t)((long long)A.total + delta);
    if (A.total > A.peak) A.peak = A.total;
    for (struct section *s = A.sections; s; s = s->next)
        if (section_running(s)) s->net += delta;
}

void *alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (!ptr) osize = 0; /* osize then tells the kind of object, not a size */
    if (nsize == 0) {
        free(ptr);
        account(-(long long)osize);
        return NULL;
    }
    if (nsize > osize && !may_grow(nsize - osize)) return NULL; /* Lua collects, retries, raises */
    void *p = realloc(ptr, nsize);
    if (!p) return NULL;
    account((long long)nsize - (long long)osize);
    return p;
}

size_t alloc_total(void) { return A.total; }
void alloc_set_limit(size_t bytes) { A.limit = bytes; }

/* lua_atpanic handler: say what went unprotected; Lua aborts after it.  [-1, +0, -] */
static int panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "rollout: PANIC: unprotected error in call to Lua API (%s)\n", msg ? msg : "?");
    return 0; /* Lua aborts */
}

lua_State *alloc_newstate(void) {
    const char *env = getenv("ROLLOUT_MEMORY_LIMIT");
    double v;
    char err[128];
    A.limit = ALLOC_DEFAULT_LIMIT;
    if (env && *env) {
        if (units_bytes(env, strlen(env), &v, err, sizeof err) == 0 && v < 1e18) A.limit = (size_t)v;
        else fprintf(stderr, "rollout: ROLLOUT_MEMORY_LIMIT: %s (using %zu bytes)\n", err, A.limit);
    }
    lua_State *L = lua_newstate(alloc_lua, NULL);
    if (L) lua_atpanic(L, panic);
    return L;
}

/* ---- sections ------------------------------------------------------------------------ */

static void section_close(struct section *s) {
    if (!s->open) return;
    s->open = 0;
    if (s->prev) s->prev->next = s->next;
    else A.sections = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    A.nsections--;
}

static void section_open(struct section *s) {
    s->prev = NULL;
    s->next = A.sections;
    if (A.sections) A.sections->prev = s;
    A.sections = s;
    s->open = 1;
    A.nsections++;
}

/* __gc of a section: closes one whose task was cancelled mid-way  [-0, +0, e] */
static int l_section_gc(lua_State *L) {
    section_close(luaL_checkudata(L, 1, SECTION_MT));
    return 0;
}

/* A byte count from a number or a size string. [-0, +0, v] */
static size_t check_bytes(lua_State *L, int idx, const char *fn) {
    double v;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        v = lua_tonumber(L, idx);
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        char err[128];
        if (units_bytes(s, n, &v, err, sizeof err) != 0) luaL_error(L, "%s: %s", fn, err);
    } else {
        return (size_t)luaL_typeerror(L, idx, "a byte count or a size such as \"64Mi\"");
    }
    if (!(v >= 0) || v >= 9e18) luaL_error(L, "%s: a size must be between 0 and 2^63 bytes", fn);
    return (size_t)v;
}

/* "64 MiB", "512 KiB" or "1000 bytes": the cap as it was most likely written. */
static void push_size(lua_State *L, size_t n) {
    static const char *const units[] = {"GiB", "MiB", "KiB"};
    for (int i = 0; i < 3; i++) {
        size_t unit = (size_t)1 << (10 * (3 - i));
        if (n >= unit && n % unit == 0) {
            lua_pushfstring(L, "%I %s", (lua_Integer)(n / unit), units[i]);
            return;
        }
    }
    lua_pushfstring(L, "%I bytes", (lua_Integer)n);
}

/* End of the section: close it, then return fn's results or raise.  [-0, +?, e] */
static int l_alloc_run_k(lua_State *L, int status, lua_KContext ctx) {
    int base = (int)ctx;
    struct section *s = luaL_checkudata(L, base, SECTION_MT);
    int exceeded = s->exceeded;
    section_close(s);
    if (exceeded) {
        lua_pushliteral(L, "budget exceeded: more than ");
        push_size(L, s->cap);
        lua_pushliteral(L, " of memory");
        lua_concat(L, 3);
        return lua_error(L);
    }
    if (status != LUA_OK && status != LUA_YIELD) return lua_error(L);
    return lua_gettop(L) - base;
}

/* alloc.run(fn, limit, ...) -> ...  [-0, +?, e] */
static int l_alloc_run(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    size_t cap = check_bytes(L, 2, "alloc.run");
    int nargs = lua_gettop(L) - 2;
    luaL_checkstack(L, nargs + 2, "alloc.run: too many arguments");
    struct section *s = lua_newuserdatauv(L, sizeof *s, 1);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, SECTION_MT);
    lua_pushthread(L);
    lua_setiuservalue(L, -2, 1); /* the thread lives as long as the section can be open */
    int base = lua_gettop(L);
    s->thread = L;
    s->cap = cap;
    lua_pushvalue(L, 1);
    for (int i = 0; i < nargs; i++) lua_pushvalue(L, 3 + i);
    section_open(s);
    int status = lua_pcallk(L, nargs, LUA_MULTRET, 0, base, l_alloc_run_k);
    return l_alloc_run_k(L, status, base);
}

/* alloc.stats() -> {total=, peak=, limit=, sections=}  [-0, +1, m] */
static int l_alloc_stats(lua_State *L) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)A.total);
    lua_setfield(L, -2, "total");
    lua_pushinteger(L, (lua_Integer)A.peak);
    lua_setfield(L, -2, "peak");
    lua_pushinteger(L, (lua_Integer)A.limit);
    lua_setfield(L, -2, "limit");
    lua_pushinteger(L, A.nsections);
    lua_setfield(L, -2, "sections");
    return 1;
}

/* alloc.limit([bytes]) -> previous limit  [-0, +1, v] */
static int l_alloc_limit(lua_State *L) {
    size_t old = A.limit;
    if (!lua_isnoneornil(L, 1)) A.limit = check_bytes(L, 1, "alloc.limit");
    lua_pushinteger(L, (lua_Integer)old);
    return 1;
}

static const luaL_Reg alloc_funcs[] = {
    {"run", l_alloc_run},
    {"stats", l_alloc_stats},
    {"limit", l_alloc_limit},
    {NULL, NULL},
};

/* require "rollout.alloc" -> module  [-0, +1, m] */
int luaopen_rollout_alloc(lua_State *L) {
    if (luaL_newmetatable(L, SECTION_MT)) {
        lua_pushcfunction(L, l_section_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, alloc_funcs);
    return 1;
}
