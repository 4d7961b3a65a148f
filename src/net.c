/* net.c: the `net` namespace: non-blocking Unix and TCP stream sockets on the loop.
 *
 * Sockets are non-blocking and watched with ev_io; a task that must wait parks (loop_park;
 * loop_park_idle for accept, so a listening server does not hold the virtual clock) and its
 * continuation retries the operation when woken. Reading is buffered in C.
 *
 * Lua API:
 *   net.connect_unix(path [, timeout]) -> conn | nil, "connect PATH: reason"
 *   net.connect_tcp(host, port [, timeout]) -> conn | nil, "connect HOST:PORT: reason"
 *       host: an address, "localhost", or a name (resolved off the loop by getaddrinfo_a);
 *       every address is tried in turn. A timeout gives "connect HOST:PORT: timed out".
 *   net.listen_unix(path [, mode]) -> server | nil, err
 *       a stale socket file (nobody accepting) is replaced; a live one is an error. mode
 *       ("0600" or an integer like tonumber("600", 8)) applies from bind on (umask), so the
 *       socket is never reachable with wider permissions. Creating the directory is the
 *       caller's job. close() removes the socket file if it is still ours.
 *   net.listen_tcp(host, port) -> server | nil, err      host: an address, "localhost" or
 *       "*"; port 0 picks a free port (see server:port()).
 *   server:accept([timeout]) -> conn | nil, "timeout" | nil, "closed" | nil, err
 *   server:port() -> n | nil (unix);  server:path() -> path | nil;  server:fd();  server:close()
 *
 *   conn:send(data [, timeout]) -> true | nil, err, bytes_sent     writes everything
 *   conn:receive(pattern [, timeout]) -> data | nil, err, partial
 *       "l" or "*l": a line without its "\n" (and without a "\r" before it); "L": with it;
 *       "a" or "*a": everything until the peer closes (not an error at EOF); n: exactly n bytes.
 *   conn:receive_until(delimiter [, timeout]) -> data before the delimiter (which is consumed)
 *       err is "closed" (EOF or reset before the pattern completed), "timeout" or a reason;
 *       partial is what had arrived, and it is consumed. At most 64 MiB are buffered.
 *   conn:shutdown() -> true | nil, err       no more sending (the peer reads EOF)
 *   conn:close()                             wakes a task waiting on the conn with "closed"
 *   conn:peer_uid() -> uid, gid, pid | nil, err     SO_PEERCRED, Unix sockets only
 *   conn:fd() -> n | nil
 *
 * One task at a time may receive on a conn, and one may send (a reader and a writer may run
 * side by side); a second raises. Cancelling a waiting task releases its watchers and leaves
 * buffered data in place, so the conn still works for another task; a cancelled send leaves
 * the stream at an unknown point. Conns and servers close when collected.
 * Timeouts are seconds or durations ("500ms") on the real clock, also under the virtual one:
 * they bound real I/O.
 *
 * Error policy: bad arguments and misuse raise; operational failures return nil, err.
 */
#include "rollout/net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "rollout/loop.h"
#include "rollout/units.h"

#define CONN_MT "rollout.net.conn"
#define SERVER_MT "rollout.net.server"
#define CONNECT_MT "rollout.net.connect"

#define RECV_CHUNK 65536
#define MAX_BUFFER ((size_t)64 << 20)
#define MAX_ADDRS 8
#define FILLS_PER_TURN 16

#define OWNER(ptr, type, member) ((type *)(void *)(((char *)(ptr)) - offsetof(type, member)))

/* ---- helpers --------------------------------------------------------------------------- */

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void timer_arm_until(ev_timer *t, double deadline) {
    if (deadline < 0) return;
    struct ev_loop *ev = loop_ev();
    double d = deadline - mono_now();
    ev_timer_stop(ev, t);
    ev_now_update(ev);
    ev_timer_set(t, d > 0 ? d : 0, 0);
    ev_timer_start(ev, t);
}

/* A deadline on the monotonic clock from an optional timeout at idx; -1 for none. */
static double opt_deadline(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return -1;
    double s = 0;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        s = lua_tonumber(L, idx);
    } else {
        size_t n;
        const char *str = luaL_checklstring(L, idx, &n);
        char err[128];
        if (units_duration(str, n, &s, err, sizeof err) != 0) luaL_argerror(L, idx, err);
    }
    if (!(s >= 0)) luaL_argerror(L, idx, "timeout must be >= 0");
    return mono_now() + s;
}

static int timed_out(double deadline) { return deadline >= 0 && mono_now() >= deadline; }

static int fail_errno(lua_State *L, const char *what, const char *target, int e) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, target, strerror(e));
    return 2;
}

static int push_fail(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static const char *stream_error(int e) { return e == EPIPE || e == ECONNRESET ? "closed" : strerror(e); }

static int fill_sun(struct sockaddr_un *sa, const char *path) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path) return -1;
    strcpy(sa->sun_path, path);
    return 0;
}

/* ---- conns ------------------------------------------------------------------------------ */

struct conn {
    int fd;
    int eof, err; /* the peer closed; errno of a failed read */
    char *buf;    /* unread bytes are buf[start, start + len) */
    size_t start, len, cap;
    size_t scanned; /* bytes already searched for the current pattern */
    task *reader, *writer;
    ev_io rio, wio;
    ev_timer rtimer, wtimer;
};

static void conn_stop_reader(struct conn *c) {
    ev_io_stop(loop_ev(), &c->rio);
    ev_timer_stop(loop_ev(), &c->rtimer);
    c->reader = NULL;
}

static void conn_stop_writer(struct conn *c) {
    ev_io_stop(loop_ev(), &c->wio);
    ev_timer_stop(loop_ev(), &c->wtimer);
    c->writer = NULL;
}

static void conn_wake_reader(struct conn *c) {
    task *t = c->reader;
    conn_stop_reader(c);
    if (t) loop_ready(t, 0);
}

static void conn_wake_writer(struct conn *c) {
    task *t = c->writer;
    conn_stop_writer(c);
    if (t) loop_ready(t, 0);
}

static void conn_on_readable(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    conn_wake_reader(OWNER(w, struct conn, rio));
}

static void conn_on_rtimeout(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)revents;
    conn_wake_reader(OWNER(w, struct conn, rtimer));
}

static void conn_on_writable(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    conn_wake_writer(OWNER(w, struct conn, wio));
}

static void conn_on_wtimeout(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)revents;
    conn_wake_writer(OWNER(w, struct conn, wtimer));
}

static void conn_cancel_reader(void *ud) { conn_stop_reader(ud); }
static void conn_cancel_writer(void *ud) { conn_stop_writer(ud); }

/* Close the socket; `wake` readies the tasks waiting on it (they see "closed"). */
static void conn_release(struct conn *c, int wake) {
    task *r = c->reader, *w = c->writer;
    conn_stop_reader(c);
    conn_stop_writer(c);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->start = c->len = c->cap = c->scanned = 0;
    if (wake && r) loop_ready(r, 0);
    if (wake && w) loop_ready(w, 0);
}

/* A new conn owning fd (or -1 to attach later). [-0, +1, m] */
static struct conn *push_conn(lua_State *L, int fd) {
    struct conn *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    c->fd = fd;
    ev_io_init(&c->rio, conn_on_readable, fd, EV_READ);
    ev_io_init(&c->wio, conn_on_writable, fd, EV_WRITE);
    ev_init(&c->rtimer, conn_on_rtimeout);
    ev_init(&c->wtimer, conn_on_wtimeout);
    luaL_setmetatable(L, CONN_MT);
    return c;
}

static void conn_attach(struct conn *c, int fd) {
    c->fd = fd;
    ev_io_set(&c->rio, fd, EV_READ);
    ev_io_set(&c->wio, fd, EV_WRITE);
}

static struct conn *check_conn(lua_State *L) { return luaL_checkudata(L, 1, CONN_MT); }

static void conn_consume(struct conn *c, size_t n) {
    c->start += n;
    c->len -= n;
    c->scanned = 0;
    if (!c->len) c->start = 0;
}

/* Read what the socket has: 1 got data, 0 would block, -1 EOF or error (in c), -2 the
 * buffer is full. */
static int conn_fill(struct conn *c) {
    if (c->eof || c->err) return -1;
    if (c->len >= MAX_BUFFER) return -2;
    if (c->start && c->start + c->len + RECV_CHUNK > c->cap) {
        memmove(c->buf, c->buf + c->start, c->len);
        c->start = 0;
    }
    if (c->cap - c->len - c->start < RECV_CHUNK) {
        size_t cap = c->cap ? c->cap * 2 : RECV_CHUNK;
        while (cap - c->len - c->start < RECV_CHUNK) cap *= 2;
        char *p = realloc(c->buf, cap);
        if (!p) return c->err = ENOMEM, -1;
        c->buf = p;
        c->cap = cap;
    }
    ssize_t n;
    do n = recv(c->fd, c->buf + c->start + c->len, RECV_CHUNK, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) return c->len += (size_t)n, 1;
    if (n == 0) return c->eof = 1, -1;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    c->err = errno;
    return -1;
}

enum pattern { P_LINE, P_LINE_KEEP, P_ALL, P_BYTES, P_UNTIL };

/* nil, err, partial (the buffered bytes, consumed) [-0, +3, m] */
static int receive_fail(lua_State *L, struct conn *c, const char *err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_pushlstring(L, c->buf ? c->buf + c->start : "", c->len);
    conn_consume(c, c->len);
    return 3;
}

static void push_consume(lua_State *L, struct conn *c, size_t n, size_t skip) {
    lua_pushlstring(L, c->buf + c->start, n);
    conn_consume(c, n + skip);
}

/* Answer the receive from the buffer if it can be answered now. Stack: conn, pattern.
 * Returns the number of results, or 0 to read more. */
static int receive_try(lua_State *L, struct conn *c, int kind) {
    if (c->fd < 0) return push_fail(L, "closed");
    const char *p = c->buf ? c->buf + c->start : "";
    size_t len = c->len;
    if (kind == P_LINE || kind == P_LINE_KEEP) {
        const char *nl = memchr(p + c->scanned, '\n', len - c->scanned);
        if (nl) {
            size_t k = (size_t)(nl - p), n = k;
            if (kind == P_LINE_KEEP) n = k + 1;
            else if (n && p[n - 1] == '\r') n--;
            push_consume(L, c, n, k + 1 - n);
            return 1;
        }
        c->scanned = len;
    } else if (kind == P_ALL) {
        if (c->eof) {
            push_consume(L, c, len, 0);
            return 1;
        }
    } else if (kind == P_BYTES) {
        size_t want = (size_t)lua_tointeger(L, 2);
        if (len >= want) {
            push_consume(L, c, want, 0);
            return 1;
        }
    } else {
        size_t dl;
        const char *d = lua_tolstring(L, 2, &dl);
        const char *hit = memmem(p + c->scanned, len - c->scanned, d, dl);
        if (hit) {
            push_consume(L, c, (size_t)(hit - p), dl);
            return 1;
        }
        c->scanned = len >= dl ? len - dl + 1 : 0;
    }
    if (c->eof) return receive_fail(L, c, "closed");
    if (c->err) return receive_fail(L, c, stream_error(c->err));
    return 0;
}

/* conn:receive's continuation. Stack: conn, pattern, timeout, deadline; ctx: the pattern kind.
 * [-0, +1|2|3, e] */
static int l_conn_receive_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    struct conn *c = lua_touserdata(L, 1);
    double deadline = lua_tonumber(L, 4);
    for (int fills = 0;;) {
        int n = receive_try(L, c, (int)ctx);
        if (n) return n;
        int f = conn_fill(c);
        if (f == -2) {
            lua_pushnil(L);
            lua_pushfstring(L, "more than %I bytes without the pattern completing", (lua_Integer)MAX_BUFFER);
            return 2;
        }
        if (f == 0 || ++fills >= FILLS_PER_TURN) break; /* wait (or give others a turn) */
    }
    if (timed_out(deadline)) return receive_fail(L, c, "timeout");
    loop_check_can_park(L, "conn:receive");
    ev_io_start(loop_ev(), &c->rio);
    timer_arm_until(&c->rtimer, deadline);
    c->reader = loop_park(L, conn_cancel_reader, c);
    return lua_yieldk(L, 0, ctx, l_conn_receive_k);
}

static int start_receive(lua_State *L, int kind, const char *fn) {
    struct conn *c = check_conn(L);
    double deadline = opt_deadline(L, 3);
    if (c->reader)
        return luaL_error(L,
                          "%s: another task is receiving on this connection "
                          "(one reader at a time)",
                          fn);
    lua_settop(L, 3);
    lua_pushnumber(L, deadline);
    c->scanned = 0;
    return l_conn_receive_k(L, LUA_OK, kind);
}

/* conn:receive(pattern [, timeout]) -> data | nil, err, partial  [-0, +1|2|3, e] */
static int l_conn_receive(lua_State *L) {
    int kind;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 2);
        if (n < 0 || (size_t)n > MAX_BUFFER) luaL_argerror(L, 2, "byte count out of range");
        kind = P_BYTES;
    } else {
        const char *p = luaL_checkstring(L, 2);
        if (*p == '*') p++;
        if (!strcmp(p, "l")) kind = P_LINE;
        else if (!strcmp(p, "L")) kind = P_LINE_KEEP;
        else if (!strcmp(p, "a")) kind = P_ALL;
        else return luaL_argerror(L, 2, "pattern must be \"l\", \"L\", \"a\" or a byte count");
    }
    return start_receive(L, kind, "conn:receive");
}

/* conn:receive_until(delimiter [, timeout]) -> data | nil, err, partial  [-0, +1|2|3, e] */
static int l_conn_receive_until(lua_State *L) {
    size_t n;
    luaL_checklstring(L, 2, &n);
    if (!n) luaL_argerror(L, 2, "delimiter must not be empty");
    return start_receive(L, P_UNTIL, "conn:receive_until");
}

static int send_fail(lua_State *L, const char *err, size_t sent) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_pushinteger(L, (lua_Integer)sent);
    return 3;
}

/* conn:send's continuation. Stack: conn, data, timeout, deadline, bytes sent so far.
 * [-0, +1|3, e] */
static int l_conn_send_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    struct conn *c = lua_touserdata(L, 1);
    size_t len;
    const char *data = lua_tolstring(L, 2, &len);
    double deadline = lua_tonumber(L, 4);
    size_t off = (size_t)lua_tointeger(L, 5);
    while (off < len) {
        if (c->fd < 0) return send_fail(L, "closed", off);
        ssize_t n = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) off += (size_t)n;
        else if (n < 0 && errno == EINTR) continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        else return send_fail(L, stream_error(errno), off);
    }
    if (off == len) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (timed_out(deadline)) return send_fail(L, "timeout", off);
    loop_check_can_park(L, "conn:send");
    lua_pushinteger(L, (lua_Integer)off);
    lua_replace(L, 5);
    ev_io_start(loop_ev(), &c->wio);
    timer_arm_until(&c->wtimer, deadline);
    c->writer = loop_park(L, conn_cancel_writer, c);
    return lua_yieldk(L, 0, 0, l_conn_send_k);
}

/* conn:send(data [, timeout]) -> true | nil, err, bytes_sent  [-0, +1|3, e] */
static int l_conn_send(lua_State *L) {
    struct conn *c = check_conn(L);
    luaL_checkstring(L, 2);
    double deadline = opt_deadline(L, 3);
    if (c->writer)
        return luaL_error(L, "conn:send: another task is sending on this connection "
                             "(one writer at a time)");
    lua_settop(L, 3);
    lua_pushnumber(L, deadline);
    lua_pushinteger(L, 0);
    return l_conn_send_k(L, LUA_OK, 0);
}

/* conn:close(): a task waiting on it wakes with "closed"  [-0, +0, e] */
static int l_conn_close(lua_State *L) {
    conn_release(check_conn(L), 1);
    return 0;
}

/* __gc of a conn  [-0, +0, e] */
static int l_conn_gc(lua_State *L) {
    conn_release(check_conn(L), 0);
    return 0;
}

/* conn:shutdown() -> true | nil, err  [-0, +1|2, e] */
static int l_conn_shutdown(lua_State *L) {
    struct conn *c = check_conn(L);
    if (c->fd < 0) return push_fail(L, "closed");
    if (shutdown(c->fd, SHUT_WR) != 0) return push_fail(L, strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:peer_uid() -> uid, gid, pid | nil, err  [-0, +2|3, e] */
static int l_conn_peer_uid(lua_State *L) {
    struct conn *c = check_conn(L);
    if (c->fd < 0) return push_fail(L, "closed");
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) != 0 || ss.ss_family != AF_UNIX)
        return push_fail(L, "peer_uid: not a unix socket");
    struct ucred cr;
    socklen_t cl = sizeof cr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0) return push_fail(L, strerror(errno));
    lua_pushinteger(L, (lua_Integer)cr.uid);
    lua_pushinteger(L, (lua_Integer)cr.gid);
    lua_pushinteger(L, (lua_Integer)cr.pid);
    return 3;
}

/* conn:fd() -> fd | nil once closed  [-0, +1, e] */
static int l_conn_fd(lua_State *L) {
    struct conn *c = check_conn(L);
    if (c->fd < 0) lua_pushnil(L);
    else lua_pushinteger(L, c->fd);
    return 1;
}

/* __tostring of a conn: "conn (fd N)" or "conn (closed)"  [-0, +1, e] */
static int l_conn_tostring(lua_State *L) {
    struct conn *c = check_conn(L);
    if (c->fd < 0) lua_pushliteral(L, "conn (closed)");
    else lua_pushfstring(L, "conn (fd %d)", c->fd);
    return 1;
}

/* ---- name resolution off the loop (getaddrinfo_a) --------------------------------------- */

struct connect;

/* Outlives its connect when abandoned: a running lookup cannot always be cancelled. */
struct lookup {
    struct gaicb cb;
    struct addrinfo hints;
    char host[256], port[16];
    struct connect *op; /* NULL once abandoned */
    struct lookup *next;
};

static struct lookup *lookups;
static ev_async lookup_async;
static struct ev_loop *lookup_loop;

/* In a glibc notification thread: only the thread-safe ev_async_send. */
static void lookup_notify(union sigval sv) {
    (void)sv;
    ev_async_send(lookup_loop, &lookup_async);
}

/* ---- connecting ------------------------------------------------------------------------- */

struct connect {
    int fd; /* the attempt in progress */
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t lens[MAX_ADDRS];
    int naddr, next;
    int last_err, gai_err;
    int writable;          /* the attempt's socket became writable */
    struct lookup *lookup; /* the name being resolved */
    task *task;
    ev_io w;
    ev_timer timer;
};

static void connect_stop(struct connect *op) {
    ev_io_stop(loop_ev(), &op->w);
    ev_timer_stop(loop_ev(), &op->timer);
}

static void connect_wake(struct connect *op) {
    task *t = op->task;
    op->task = NULL;
    connect_stop(op);
    if (t) loop_ready(t, 0);
}

static void connect_on_writable(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    struct connect *op = OWNER(w, struct connect, w);
    op->writable = 1;
    connect_wake(op);
}

static void connect_on_timeout(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)revents;
    connect_wake(OWNER(w, struct connect, timer));
}

static void copy_addrs(struct connect *op, const struct addrinfo *ai) {
    for (; ai && op->naddr < MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof op->addrs[0]) continue;
        memcpy(&op->addrs[op->naddr], ai->ai_addr, ai->ai_addrlen);
        op->lens[op->naddr++] = ai->ai_addrlen;
    }
}

static void lookup_free(struct lookup *lk) {
    struct lookup **pp = &lookups;
    while (*pp && *pp != lk) pp = &(*pp)->next;
    if (*pp) *pp = lk->next;
    if (lk->cb.ar_result) freeaddrinfo(lk->cb.ar_result);
    free(lk);
    if (!lookups) ev_async_stop(lookup_loop, &lookup_async);
}

static void lookup_on_done(struct ev_loop *ev, ev_async *w, int revents) {
    (void)ev;
    (void)w;
    (void)revents;
    struct lookup *lk = lookups;
    while (lk) {
        struct lookup *next = lk->next;
        int rc = gai_error(&lk->cb);
        if (rc != EAI_INPROGRESS) {
            struct connect *op = lk->op;
            if (op) {
                op->lookup = NULL;
                op->gai_err = rc;
                if (rc == 0) copy_addrs(op, lk->cb.ar_result);
                connect_wake(op);
            }
            lookup_free(lk);
        }
        lk = next;
    }
}

static int lookup_start(struct connect *op, const char *host, const char *port) {
    struct lookup *lk = calloc(1, sizeof *lk);
    if (!lk) return EAI_MEMORY;
    snprintf(lk->host, sizeof lk->host, "%s", host);
    snprintf(lk->port, sizeof lk->port, "%s", port);
    lk->hints.ai_family = AF_UNSPEC;
    lk->hints.ai_socktype = SOCK_STREAM;
    lk->hints.ai_flags = AI_NUMERICSERV;
    lk->cb.ar_name = lk->host;
    lk->cb.ar_service = lk->port;
    lk->cb.ar_request = &lk->hints;
    if (!lookup_loop) {
        lookup_loop = loop_ev();
        ev_async_init(&lookup_async, lookup_on_done);
    }
    ev_async_start(lookup_loop, &lookup_async); /* before the request can complete */
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD;
    sev.sigev_notify_function = lookup_notify;
    struct gaicb *list[1] = {&lk->cb};
    int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
    if (rc != 0) {
        free(lk);
        if (!lookups) ev_async_stop(lookup_loop, &lookup_async);
        return rc;
    }
    lk->op = op;
    lk->next = lookups;
    lookups = lk;
    op->lookup = lk;
    return 0;
}

/* The connect no longer wants its lookup: cancel it, or let lookup_on_done free it. */
static void lookup_abandon(struct connect *op) {
    struct lookup *lk = op->lookup;
    if (!lk) return;
    op->lookup = NULL;
    lk->op = NULL;
    if (gai_cancel(&lk->cb) == EAI_CANCELED) lookup_free(lk);
}

static void connect_release(struct connect *op) {
    connect_stop(op);
    op->task = NULL;
    lookup_abandon(op);
    if (op->fd >= 0) close(op->fd);
    op->fd = -1;
}

static void connect_cancel(void *ud) { connect_release(ud); }

/* __gc of a connect in progress  [-0, +0, e] */
static int l_connect_gc(lua_State *L) {
    connect_release(luaL_checkudata(L, 1, CONNECT_MT));
    return 0;
}

/* Numeric hosts and "localhost" need no lookup. 1 if resolved into op, 0 if not numeric. */
static int resolve_numeric(struct connect *op, const char *host, const char *port) {
    if (!strcmp(host, "localhost")) {
        return resolve_numeric(op, "127.0.0.1", port) && resolve_numeric(op, "::1", port);
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &res) != 0) return 0;
    copy_addrs(op, res);
    freeaddrinfo(res);
    return 1;
}

/* nil, "connect TARGET: reason" (target at stack index 6) [-0, +2, m] */
static int connect_fail(lua_State *L, struct connect *op, const char *reason) {
    connect_release(op);
    lua_pushnil(L);
    lua_pushfstring(L, "connect %s: %s", lua_tostring(L, 6), reason);
    return 2;
}

/* Start the next address: 1 connected, 0 in progress, -1 this address failed. */
static int connect_attempt(struct connect *op) {
    const struct sockaddr *sa = (const struct sockaddr *)&op->addrs[op->next];
    socklen_t len = op->lens[op->next++];
    op->writable = 0;
    op->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (op->fd < 0) return op->last_err = errno, -1;
    if (connect(op->fd, sa, len) == 0) return 1;
    if (errno == EINPROGRESS) return 0;
    op->last_err = errno;
    close(op->fd);
    op->fd = -1;
    return -1;
}

/* net.connect_*'s continuation. Stack: target/host, port, timeout, deadline, connect, label.
 * [-0, +1|2, e] */
static int l_net_connect_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    struct connect *op = lua_touserdata(L, 5);
    double deadline = lua_tonumber(L, 4);
    for (;;) {
        if (op->lookup) break;
        if (op->gai_err) return connect_fail(L, op, gai_strerror(op->gai_err));
        if (op->fd >= 0) {
            if (!op->writable) break;
            int e = 0;
            socklen_t el = sizeof e;
            if (getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0) e = errno;
            if (e == 0) {
                struct conn *c = push_conn(L, -1);
                conn_attach(c, op->fd);
                op->fd = -1;
                connect_release(op);
                return 1;
            }
            op->last_err = e;
            close(op->fd);
            op->fd = -1;
        }
        if (op->next >= op->naddr) return connect_fail(L, op, op->naddr ? strerror(op->last_err) : "no address");
        int rc = connect_attempt(op);
        if (rc == 1) op->writable = 1;
        if (rc == 0) ev_io_set(&op->w, op->fd, EV_WRITE);
    }
    if (timed_out(deadline)) return connect_fail(L, op, "timed out");
    loop_check_can_park(L, "net.connect"); /* op is released by its __gc */
    if (op->fd >= 0) ev_io_start(loop_ev(), &op->w);
    timer_arm_until(&op->timer, deadline);
    op->task = loop_park(L, connect_cancel, op);
    return lua_yieldk(L, 0, 0, l_net_connect_k);
}

/* Lay out the stack for l_net_connect_k: deadline at 4, a new connect at 5. [-0, +2, e] */
static struct connect *push_connect(lua_State *L, int timeout_idx) {
    double deadline = opt_deadline(L, timeout_idx);
    lua_settop(L, 3);
    lua_pushnumber(L, deadline);
    struct connect *op = lua_newuserdatauv(L, sizeof *op, 0);
    memset(op, 0, sizeof *op);
    op->fd = -1;
    ev_io_init(&op->w, connect_on_writable, -1, EV_WRITE);
    ev_init(&op->timer, connect_on_timeout);
    luaL_setmetatable(L, CONNECT_MT);
    return op;
}

/* net.connect_unix(path [, timeout]) -> conn | nil, err  [-0, +1|2, e] */
static int l_net_connect_unix(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_pushnil(L);
    lua_insert(L, 2); /* stack: path, nil, timeout */
    struct connect *op = push_connect(L, 3);
    lua_pushvalue(L, 1); /* 6: label */
    struct sockaddr_un sa;
    if (fill_sun(&sa, path) != 0) return connect_fail(L, op, "path too long for a unix socket");
    memcpy(&op->addrs[0], &sa, sizeof sa);
    op->lens[0] = sizeof sa;
    op->naddr = 1;
    return l_net_connect_k(L, LUA_OK, 0);
}

static const char *check_port(lua_State *L, int idx, char *buf, size_t n, int allow_zero) {
    lua_Integer port;
    if (lua_type(L, idx) == LUA_TSTRING) {
        char *end;
        const char *s = lua_tostring(L, idx);
        port = strtol(s, &end, 10);
        if (!*s || *end) port = -1;
    } else {
        port = luaL_checkinteger(L, idx);
    }
    if (port < (allow_zero ? 0 : 1) || port > 65535) luaL_argerror(L, idx, "port out of range");
    snprintf(buf, n, "%d", (int)port);
    return buf;
}

/* net.connect_tcp(host, port [, timeout]) -> conn | nil, err  [-0, +1|2, e] */
static int l_net_connect_tcp(lua_State *L) {
    const char *host = luaL_checkstring(L, 1);
    char port[16];
    check_port(L, 2, port, sizeof port, 0);
    struct connect *op = push_connect(L, 3);
    lua_pushfstring(L, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port); /* 6 */
    if (!resolve_numeric(op, host, port)) {
        int rc = lookup_start(op, host, port);
        if (rc != 0) return connect_fail(L, op, gai_strerror(rc));
    }
    return l_net_connect_k(L, LUA_OK, 0);
}

/* ---- servers ---------------------------------------------------------------------------- */

struct server {
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* unix: removed on close if ours */
    dev_t dev;
    ino_t ino;
    task *acceptor;
    ev_io w;
    ev_timer timer;
};

static void server_stop(struct server *s) {
    ev_io_stop(loop_ev(), &s->w);
    ev_timer_stop(loop_ev(), &s->timer);
    s->acceptor = NULL;
}

static void server_wake(struct server *s) {
    task *t = s->acceptor;
    server_stop(s);
    if (t) loop_ready(t, 0);
}

static void server_on_readable(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    server_wake(OWNER(w, struct server, w));
}

static void server_on_timeout(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)revents;
    server_wake(OWNER(w, struct server, timer));
}

static void server_cancel(void *ud) { server_stop(ud); }

static void server_release(struct server *s, int wake) {
    task *t = s->acceptor;
    server_stop(s);
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    struct stat st;
    if (s->path[0] && stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino) unlink(s->path);
    s->path[0] = 0;
    if (wake && t) loop_ready(t, 0);
}

static struct server *push_server(lua_State *L) {
    struct server *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    ev_io_init(&s->w, server_on_readable, -1, EV_READ);
    ev_init(&s->timer, server_on_timeout);
    luaL_setmetatable(L, SERVER_MT);
    return s;
}

static void server_attach(struct server *s, int fd) {
    s->fd = fd;
    ev_io_set(&s->w, fd, EV_READ);
}

static struct server *check_server(lua_State *L) { return luaL_checkudata(L, 1, SERVER_MT); }

/* server:accept's continuation. Stack: server, timeout, deadline.  [-0, +1|2, e] */
static int l_server_accept_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    struct server *s = lua_touserdata(L, 1);
    double deadline = lua_tonumber(L, 3);
    if (s->fd < 0) return push_fail(L, "closed");
    struct conn *c = push_conn(L, -1);
    int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        conn_attach(c, fd);
        return 1;
    }
    int e = errno;
    lua_pop(L, 1);
    if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED) return push_fail(L, strerror(e));
    if (timed_out(deadline)) return push_fail(L, "timeout");
    loop_check_can_park(L, "server:accept");
    ev_io_start(loop_ev(), &s->w);
    timer_arm_until(&s->timer, deadline);
    s->acceptor = loop_park_idle(L, server_cancel, s);
    return lua_yieldk(L, 0, 0, l_server_accept_k);
}

/* server:accept([timeout]) -> conn | nil, err  [-0, +1|2, e] */
static int l_server_accept(lua_State *L) {
    struct server *s = check_server(L);
    double deadline = opt_deadline(L, 2);
    if (s->acceptor) return luaL_error(L, "server:accept: another task is accepting on this server");
    lua_settop(L, 2);
    lua_pushnumber(L, deadline);
    return l_server_accept_k(L, LUA_OK, 0);
}

/* server:port() -> port | nil (a Unix socket) | nil, "closed"  [-0, +1|2, e] */
static int l_server_port(lua_State *L) {
    struct server *s = check_server(L);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (s->fd < 0 || getsockname(s->fd, (struct sockaddr *)&ss, &sl) != 0) return push_fail(L, "closed");
    if (ss.ss_family == AF_INET) lua_pushinteger(L, ntohs(((struct sockaddr_in *)&ss)->sin_port));
    else if (ss.ss_family == AF_INET6) lua_pushinteger(L, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    else lua_pushnil(L);
    return 1;
}

/* server:path() -> path | nil (a TCP server, or closed)  [-0, +1, e] */
static int l_server_path(lua_State *L) {
    struct server *s = check_server(L);
    if (s->path[0]) lua_pushstring(L, s->path);
    else lua_pushnil(L);
    return 1;
}

/* server:fd() -> fd | nil once closed  [-0, +1, e] */
static int l_server_fd(lua_State *L) {
    struct server *s = check_server(L);
    if (s->fd < 0) lua_pushnil(L);
    else lua_pushinteger(L, s->fd);
    return 1;
}

/* server:close(): unlinks its socket file; a task in accept wakes  [-0, +0, e] */
static int l_server_close(lua_State *L) {
    server_release(check_server(L), 1);
    return 0;
}

/* __gc of a server  [-0, +0, e] */
static int l_server_gc(lua_State *L) {
    server_release(check_server(L), 0);
    return 0;
}

/* __tostring of a server: "server (fd N)" or "server (closed)"  [-0, +1, e] */
static int l_server_tostring(lua_State *L) {
    struct server *s = check_server(L);
    if (s->fd < 0) lua_pushliteral(L, "server (closed)");
    else lua_pushfstring(L, "server (fd %d)", s->fd);
    return 1;
}

/* A mode from "0600" / "600" (octal text) or an integer; -1 when absent. */
static int opt_mode(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return -1;
    long mode;
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        char *end;
        mode = strtol(s, &end, 8);
        if (!*s || *end) mode = -1;
    } else {
        mode = (long)luaL_checkinteger(L, idx);
    }
    if (mode < 0 || mode > 07777) luaL_argerror(L, idx, "mode must be like \"0600\" (octal)");
    return (int)mode;
}

/* Remove a socket file nobody accepts on; refuse a live one or a non-socket. */
static int clear_stale(const char *path, const struct sockaddr_un *sa, char *err, size_t n) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        return snprintf(err, n, "listen %s: %s", path, strerror(errno)), -1;
    }
    if (!S_ISSOCK(st.st_mode)) return snprintf(err, n, "listen %s: exists and is not a socket", path), -1;
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0) return snprintf(err, n, "listen %s: %s", path, strerror(errno)), -1;
    int rc = connect(probe, (const struct sockaddr *)sa, sizeof *sa), e = errno;
    close(probe);
    if (rc == 0 || e == EAGAIN) return snprintf(err, n, "listen %s: a server is already listening there", path), -1;
    if (e != ECONNREFUSED && e != ENOENT) return snprintf(err, n, "listen %s: %s", path, strerror(e)), -1;
    if (unlink(path) != 0 && errno != ENOENT)
        return snprintf(err, n, "listen %s: removing the stale socket: %s", path, strerror(errno)), -1;
    return 0;
}

/* net.listen_unix(path [, mode]) -> server | nil, err  [-0, +1|2, e] */
static int l_net_listen_unix(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int mode = opt_mode(L, 2);
    struct sockaddr_un sa;
    if (fill_sun(&sa, path) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "listen %s: path too long for a unix socket", path);
        return 2;
    }
    struct server *s = push_server(L);
    char err[512];
    if (clear_stale(path, &sa, err, sizeof err) != 0) return push_fail(L, err);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail_errno(L, "listen", path, errno);
    mode_t old = 0;
    if (mode >= 0) old = umask((mode_t)(~mode & 0777));
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa), e = errno;
    if (mode >= 0) umask(old);
    if (rc != 0) {
        close(fd);
        return fail_errno(L, "listen", path, e);
    }
    struct stat st;
    if ((mode >= 0 && chmod(path, (mode_t)mode) != 0) || listen(fd, SOMAXCONN) != 0 || stat(path, &st) != 0) {
        e = errno;
        close(fd);
        unlink(path);
        return fail_errno(L, "listen", path, e);
    }
    server_attach(s, fd);
    strcpy(s->path, path);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    return 1;
}

/* net.listen_tcp(host, port) -> server | nil, err  [-0, +1|2, e] */
static int l_net_listen_tcp(lua_State *L) {
    const char *host = luaL_checkstring(L, 1);
    char port[16];
    check_port(L, 2, port, sizeof port, 1);
    if (!strcmp(host, "*") || !*host) host = "0.0.0.0";
    else if (!strcmp(host, "localhost")) host = "127.0.0.1";
    const char *label = lua_pushfstring(L, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "listen %s: host must be an IP address, \"localhost\" or \"*\"", label);
        return 2;
    }
    struct server *s = push_server(L);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    int ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
             bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0;
    int e = errno;
    freeaddrinfo(res);
    if (!ok) {
        if (fd >= 0) close(fd);
        return fail_errno(L, "listen", label, e);
    }
    server_attach(s, fd);
    return 1;
}

/* ---- module ----------------------------------------------------------------------------- */

static const luaL_Reg conn_methods[] = {
    {"send", l_conn_send},
    {"receive", l_conn_receive},
    {"receive_until", l_conn_receive_until},
    {"shutdown", l_conn_shutdown},
    {"close", l_conn_close},
    {"peer_uid", l_conn_peer_uid},
    {"fd", l_conn_fd},
    {NULL, NULL},
};

static const luaL_Reg server_methods[] = {
    {"accept", l_server_accept}, {"port", l_server_port},   {"path", l_server_path},
    {"fd", l_server_fd},         {"close", l_server_close}, {NULL, NULL},
};

static const luaL_Reg net_funcs[] = {
    {"connect_unix", l_net_connect_unix},
    {"connect_tcp", l_net_connect_tcp},
    {"listen_unix", l_net_listen_unix},
    {"listen_tcp", l_net_listen_tcp},
    {NULL, NULL},
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                      lua_CFunction tostring) {
    if (luaL_newmetatable(L, name)) {
        if (methods) {
            lua_newtable(L);
            luaL_setfuncs(L, methods, 0);
            lua_setfield(L, -2, "__index");
        }
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
        if (tostring) {
            lua_pushcfunction(L, tostring);
            lua_setfield(L, -2, "__tostring");
        }
    }
    lua_pop(L, 1);
}

/* require "rollout.net" -> module  [-0, +1, m] */
int luaopen_rollout_net(lua_State *L) {
    new_class(L, CONN_MT, conn_methods, l_conn_gc, l_conn_tostring);
    new_class(L, SERVER_MT, server_methods, l_server_gc, l_server_tostring);
    new_class(L, CONNECT_MT, NULL, l_connect_gc, NULL);
    luaL_newlib(L, net_funcs);
    return 1;
}
