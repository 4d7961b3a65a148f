/* loop.h: the scheduler. One libev loop, one lua_State, Lua coroutines as tasks,
 * a real (monotonic) or virtual clock.
 *
 * How a C binding waits without blocking (the model of OpenResty and Envoy's Lua filter):
 *
 *     static int l_http_request(lua_State *L) {          // runs inside a task
 *         struct req *r = ...start the operation...;
 *         r->task = loop_park(L, req_cancel, r);          // raises if L is not a task
 *         return lua_yield(L, 0);
 *     }
 *     static void req_done(struct req *r) {               // from any libev/curl callback
 *         lua_State *co = task_thread(r->task);
 *         lua_checkstack(co, 2);
 *         push results onto co ...;
 *         loop_ready(r->task, 2);                         // the yield returns those 2 values
 *     }
 *
 * loop_ready never resumes in place: the task is queued and resumed by the scheduler
 * outside every library callback, so a resumed task may start new operations freely.
 * If a parked task is cancelled (rollout.cancel, a trigger interrupting a hook), the
 * cancel callback runs instead and must release the operation; the task never resumes.
 *
 * Errors: programming errors (calling a waiting function outside a task) raise.
 */
#ifndef ROLLOUT_LOOP_H
#define ROLLOUT_LOOP_H

#include <ev.h>
#include <lua.h>

typedef struct task task;
typedef void (*task_cancel_fn)(void *ud);

/* The one libev loop (ev_default_loop, so ev_child works). */
struct ev_loop *loop_ev(void);

/* Seconds on the scheduler's clock: monotonic under the real clock, virtual otherwise. */
double loop_now(void);
/* Seconds since the epoch: wall time, or the virtual start time plus virtual elapsed. */
double loop_wall(void);
int loop_is_virtual(void);

/* Park the task running on L until loop_ready; see above. Counts as pending I/O for the
 * virtual clock (the clock does not jump while I/O is pending). */
task *loop_park(lua_State *L, task_cancel_fn cancel, void *ud);
/* Raise unless L is a running task that may yield where it is. */
task *loop_check_can_park(lua_State *L, const char *what);
/* The same, for a wait that is not I/O (the virtual clock may jump past it). */
task *loop_park_idle(lua_State *L, task_cancel_fn cancel, void *ud);
lua_State *task_thread(task *t);
/* True while t's coroutine runs (not waiting, not being cancelled). */
int task_is_running(task *t);
void loop_ready(task *t, int nresults);
/* Before pushing results: room for n more values on t's stack (1), or 0, and t is readied
 * to fail with a stack overflow where it waits; push nothing and release the operation. */
int loop_reserve(task *t, int n);

/* The task running on L, or NULL when L is not a task's coroutine. */
task *loop_task_of(lua_State *L);

/* Main state, for modules that need to call into Lua from a callback (rare: prefer tasks). */
lua_State *loop_lua(void);

/* Host setup used by main.c. */
void loop_init(lua_State *L, int virtual_clock);
/* Run `nargs` arguments on top of L with the function below them as the main task; run the
 * loop until the main task ends. Returns 0 if it returned normally, 1 if it raised (the
 * error and traceback are printed). The exit code the script asked for, if any, goes in *code. */
int loop_run_main(lua_State *L, int nargs, int *code);
void loop_close(void);

int luaopen_rollout_core(lua_State *L);

#endif
