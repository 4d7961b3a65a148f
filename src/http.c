/* http.c: the `http` namespace. HTTP and HTTPS from tasks, without blocking the loop.
 *
 * libcurl's multi-socket interface is driven by the one libev loop: curl tells us which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to wake it (CURLMOPT_TIMERFUNCTION);
 * libev calls curl_multi_socket_action; finished transfers come out of curl_multi_info_read.
 * A request parks its task (loop_park) and the task resumes with the response. Connections
 * are reused (one multi, one connection cache); easy handles and their buffers are pooled.
 * Host names resolve on curl's threaded resolver (checked at load), so DNS never blocks.
 *
 * Lua API:
 *   http.request{url=, method="GET", headers={name=value}, body=, timeout="30s", follow=false,
 *                max_redirects=10, cafile=, insecure=false, unix_socket=, bearer=,
 *                auth="user:pass"|{user=, password=}, connect_timeout=, max_body="64Mi",
 *                cert=, key=, cert_pem=, key_pem=, ca_pem=}
 *       -> {status=, headers={lower-case name=value}, body=, time=seconds} | nil, err
 *   http.get(url [, opts]) / http.post(url, body [, opts])      the same, shorter
 *   http.urlencode(s) -> s            percent-encodes all but A-Z a-z 0-9 - . _ ~
 *   http.urldecode(s) -> s            %XX and '+' decoded
 *   http.encode_query{k=v, k={v1, v2}} -> "k=v&..."   keys sorted, so the result is stable
 *   http.configure{max_connections=, max_host_connections=, max_body=, timeout=} -> settings
 *   http.stats() -> {active=, pooled=, sockets=}
 * Repeated response headers are joined with ", ". A body without a method means POST; a
 * body goes without Content-Type unless `headers` give one. Redirects are followed only with
 * `follow = true`. Certificates are verified unless `insecure = true`. The default timeout is
 * 30 s (http.configure), `timeout = false` waits forever. With `unix_socket`, the url may be
 * just a path ("/v1/x"). Errors never show a URL's user:password. TLS client authentication:
 * `cert`/`key` name PEM files, `cert_pem`/`key_pem` hold the PEM text itself (copied into
 * curl, never written to disk); `ca_pem` is the PEM text of the CA bundle (instead of
 * `cafile`). A key without a certificate, or a certificate without a key, raises.
 *
 * Error policy: wrong argument types, unknown options and header values with CR/LF raise;
 * transport failures return nil, err ("connection refused (http://127.0.0.1:1/)",
 * "timed out after 0.5 s", "could not resolve host 'x.invalid'"). HTTP statuses such as
 * 404 or 503 are responses. Must be called from a task (rollout.spawn or the main script).
 */
#include "rollout/http.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "rollout/loop.h"
#include "rollout/units.h"

#define HTTP_STATE_KEY "rollout.http.state"
#define HTTP_POOL_MAX 256            /* idle easy handles kept for reuse */
#define HTTP_IDLE_MAX 256L           /* idle connections kept alive */
#define HTTP_RETAIN_BUF (256u << 10) /* a pooled handle keeps buffers up to this size */

struct http_buf {
    char *p;
    size_t len, cap;
};

struct http_req {
    CURL *easy;
    task *task;
    struct http_req *prev, *next; /* active list, or pool (next only) */
    struct http_buf body, head;
    size_t max_body;
    double timeout, connect_timeout;
    int too_big, no_memory;
    int dirty;    /* options beyond the hot path set: reset before reuse */
    int body_ref; /* request body anchored in the registry */
    struct curl_slist *req_headers;
    char errbuf[CURL_ERROR_SIZE];
};

struct http_sock {
    ev_io io;
    struct http_sock *prev, *next;
};

static struct {
    CURLM *multi;
    ev_timer timer;
    struct http_req *active, *pool;
    struct http_sock *socks;
    int active_len, pool_len, socks_len;
    size_t max_body;
    double timeout;
    long max_connections, max_host_connections;
} H;

/* ---- buffers -------------------------------------------------------------------- */

static int buf_reserve(struct http_buf *b, size_t need) {
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void buf_trim(struct http_buf *b) {
    b->len = 0;
    if (b->cap <= HTTP_RETAIN_BUF) return;
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

/* ---- curl data callbacks -------------------------------------------------------- */

static size_t http_on_body(char *data, size_t size, size_t nmemb, void *ud) {
    struct http_req *r = ud;
    size_t n = size * nmemb;
    if (n > r->max_body - r->body.len) {
        r->too_big = 1;
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    }
    if (!r->body.len) { /* size the buffer once when the server says how much is coming */
        curl_off_t cl = -1;
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        if (cl > 0 && (size_t)cl <= r->max_body) buf_reserve(&r->body, (size_t)cl);
    }
    if (buf_reserve(&r->body, r->body.len + n) != 0) return r->no_memory = 1, 0;
    memcpy(r->body.p + r->body.len, data, n);
    r->body.len += n;
    return n;
}

static size_t http_on_header(char *data, size_t size, size_t nitems, void *ud) {
    struct http_req *r = ud;
    size_t n = size * nitems;
    if (n >= 5 && !memcmp(data, "HTTP/", 5)) r->head.len = 0; /* a new response (redirect, 100) */
    if (buf_reserve(&r->head, r->head.len + n) != 0) return r->no_memory = 1, 0;
    memcpy(r->head.p + r->head.len, data, n);
    r->head.len += n;
    return n;
}

/* ---- handles and the pool ------------------------------------------------------- */

static void easy_defaults(struct http_req *r) {
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "rollout");
}

static void active_link(struct http_req *r) {
    r->prev = NULL;
    r->next = H.active;
    if (H.active) H.active->prev = r;
    H.active = r;
    H.active_len++;
}

static void active_unlink(struct http_req *r) {
    if (r->prev) r->prev->next = r->next;
    else H.active = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
    H.active_len--;
}

static void req_free(struct http_req *r) {
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->req_headers);
    free(r->body.p);
    free(r->head.p);
    free(r);
}

static struct http_req *req_acquire(void) {
    struct http_req *r = H.pool;
    if (r) {
        H.pool = r->next;
        H.pool_len--;
        if (r->dirty) {
            curl_easy_reset(r->easy);
            easy_defaults(r);
            r->dirty = 0;
        }
    } else {
        r = calloc(1, sizeof *r);
        if (!r) return NULL;
        r->easy = curl_easy_init();
        if (!r->easy) return free(r), NULL;
        r->body_ref = LUA_NOREF;
        easy_defaults(r);
    }
    r->too_big = r->no_memory = 0;
    r->errbuf[0] = 0;
    active_link(r);
    return r;
}

/* Back to the pool; the handle is not in the multi. */
static void req_release(struct http_req *r) {
    active_unlink(r);
    r->task = NULL;
    if (r->body_ref != LUA_NOREF) {
        luaL_unref(loop_lua(), LUA_REGISTRYINDEX, r->body_ref);
        r->body_ref = LUA_NOREF;
    }
    curl_slist_free_all(r->req_headers); /* the next request sets CURLOPT_HTTPHEADER again */
    r->req_headers = NULL;
    if (H.pool_len >= HTTP_POOL_MAX) {
        req_free(r);
        return;
    }
    buf_trim(&r->body);
    buf_trim(&r->head);
    r->next = H.pool;
    H.pool = r;
    H.pool_len++;
}

/* A parked task was cancelled (rollout.cancel, with_timeout): drop its transfer. */
static void req_cancel(void *ud) {
    struct http_req *r = ud;
    curl_multi_remove_handle(H.multi, r->easy);
    req_release(r);
}

/* ---- results -------------------------------------------------------------------- */

static void lower_ascii(char *p, char *end) {
    for (; p < end; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
}

static int count_lines(const char *p, size_t n) {
    int lines = 0;
    for (const char *q = p; (q = memchr(q, '\n', n - (size_t)(q - p))); q++) lines++;
    return lines;
}

/* The header block as a table: lower-cased names, repeats joined with ", ".
 * The status line is skipped. Lower-cases the names in place. [-0, +1, m] */
static void push_headers(lua_State *co, char *p, size_t n) {
    char *end = p + n;
    lua_createtable(co, 0, count_lines(p, n));
    char *line = memchr(p, '\n', n);
    line = line ? line + 1 : end;
    while (line < end) {
        char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) eol = end;
        char *stop = eol > line && eol[-1] == '\r' ? eol - 1 : eol;
        char *colon = memchr(line, ':', (size_t)(stop - line));
        if (colon && colon > line) {
            char *v = colon + 1, *ve = stop;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            lower_ascii(line, colon);
            lua_pushlstring(co, line, (size_t)(colon - line));
            lua_pushvalue(co, -1);
            if (lua_rawget(co, -3) == LUA_TNIL) {
                lua_pop(co, 1);
                lua_pushlstring(co, v, (size_t)(ve - v));
            } else {
                lua_pushliteral(co, ", ");
                lua_pushlstring(co, v, (size_t)(ve - v));
                lua_concat(co, 3);
            }
            lua_rawset(co, -3);
        }
        line = eol + 1;
    }
}

/* {status=, headers=, body=, time=}  [-0, +1, m] */
static int push_response(lua_State *co, struct http_req *r) {
    long status = 0;
    curl_off_t us = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME_T, &us);
    lua_createtable(co, 0, 4);
    lua_pushinteger(co, status);
    lua_setfield(co, -2, "status");
    push_headers(co, r->head.p, r->head.len);
    lua_setfield(co, -2, "headers");
    lua_pushlstring(co, r->body.p ? r->body.p : "", r->body.len);
    lua_setfield(co, -2, "body");
    lua_pushnumber(co, (lua_Number)us / 1e6);
    lua_setfield(co, -2, "time");
    return 1;
}

/* The host part of url, for "could not resolve host 'x'". */
static void url_host(const char *url, char *out, size_t n) {
    char *host = NULL;
    CURLU *u = curl_url();
    snprintf(out, n, "%.*s", (int)n - 1, url);
    if (u && curl_url_set(u, CURLUPART_URL, url, CURLU_GUESS_SCHEME) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        snprintf(out, n, "%.*s", (int)n - 1, host);
    curl_free(host);
    curl_url_cleanup(u);
}

static const char *curl_reason(struct http_req *r, CURLcode rc) {
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
}

/* A reason a person can act on, for each transport failure. */
/* url without "user:password@", so errors can be logged. */
static const char *url_redact(const char *url, char *out, size_t n) {
    const char *p = strstr(url, "://");
    if (!p) return url;
    p += 3;
    const char *at = strchr(p, '@'), *end = p + strcspn(p, "/?#");
    if (!at || at > end) return url;
    snprintf(out, n, "%.*s%s", (int)(p - url), url, at + 1);
    return out;
}

static void describe_error(struct http_req *r, CURLcode rc, char *msg, size_t n) {
    const char *url = NULL;
    long os_errno = 0;
    char clean[1024];
    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
    curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
    url = url ? url_redact(url, clean, sizeof clean) : "?";
    char host[256];
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
        url_host(url, host, sizeof host);
        snprintf(msg, n, "could not resolve host '%s'", host);
        break;
    case CURLE_COULDNT_CONNECT:
        if (os_errno == ECONNREFUSED) snprintf(msg, n, "connection refused (%s)", url);
        else if (os_errno) snprintf(msg, n, "could not connect: %s (%s)", strerror((int)os_errno), url);
        else snprintf(msg, n, "could not connect: %s (%s)", curl_reason(r, rc), url);
        break;
    case CURLE_OPERATION_TIMEDOUT:
        if (r->connect_timeout > 0 && (r->timeout <= 0 || r->connect_timeout < r->timeout) &&
            strstr(r->errbuf, "onnection timed out"))
            snprintf(msg, n, "connect timed out after %g s (%s)", r->connect_timeout, url);
        else snprintf(msg, n, "timed out after %g s", r->timeout);
        break;
    case CURLE_WRITE_ERROR:
        if (r->too_big) snprintf(msg, n, "response body larger than %zu bytes (%s)", r->max_body, url);
        else if (r->no_memory) snprintf(msg, n, "out of memory reading the response (%s)", url);
        else snprintf(msg, n, "%s (%s)", curl_reason(r, rc), url);
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
        snprintf(msg, n, "TLS: %s (%s)", curl_reason(r, rc), url);
        break;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        snprintf(msg, n, "invalid URL '%s': %s", url, curl_reason(r, rc));
        break;
    case CURLE_TOO_MANY_REDIRECTS:
        snprintf(msg, n, "too many redirects (%s)", url);
        break;
    case CURLE_GOT_NOTHING:
        snprintf(msg, n, "server closed the connection without answering (%s)", url);
        break;
    default:
        snprintf(msg, n, "%s (%s)", curl_reason(r, rc), url);
    }
}

/* nil, err  [-0, +2, m] */
static int push_error(lua_State *co, struct http_req *r, CURLcode rc) {
    char msg[4096]; /* room for a 1 KiB url, curl's error text and ours */
    describe_error(r, rc, msg, sizeof msg);
    lua_pushnil(co);
    lua_pushstring(co, msg);
    return 2;
}

/* A transfer ended: hand the task its results. Never called from inside a curl callback. */
static void req_finish(struct http_req *r, CURLcode rc) {
    task *t = r->task;
    lua_State *co = task_thread(t);
    curl_multi_remove_handle(H.multi, r->easy);
    if (!loop_reserve(t, 4)) { /* t fails with a stack overflow */
        req_release(r);
        return;
    }
    int n = rc == CURLE_OK ? push_response(co, r) : push_error(co, r, rc);
    req_release(r);
    loop_ready(t, n);
}

static void collect_done(void) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(H.multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        struct http_req *r = NULL;
        CURLcode rc = m->data.result; /* m is invalid once the handle is removed */
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        req_finish(r, rc);
    }
}

/* ---- libev <-> curl ------------------------------------------------------------- */

static void http_on_io(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    int flags = (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(H.multi, w->fd, flags, &running); /* may free w */
    collect_done();
}

static void http_on_timer(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)w;
    (void)revents;
    int running;
    curl_multi_socket_action(H.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect_done();
}

static void sock_free(struct http_sock *s) {
    ev_io_stop(loop_ev(), &s->io);
    if (s->prev) s->prev->next = s->next;
    else H.socks = s->next;
    if (s->next) s->next->prev = s->prev;
    H.socks_len--;
    free(s);
}

static struct http_sock *sock_new(curl_socket_t fd) {
    struct http_sock *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    ev_io_init(&s->io, http_on_io, fd, 0);
    s->next = H.socks;
    if (H.socks) H.socks->prev = s;
    H.socks = s;
    H.socks_len++;
    curl_multi_assign(H.multi, fd, s);
    return s;
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl asks. */
static int http_on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp) {
    (void)e;
    (void)ud;
    struct http_sock *s = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (s) sock_free(s);
        return 0;
    }
    if (!s && !(s = sock_new(fd))) return -1;
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (ev_is_active(&s->io) && (s->io.events & (EV_READ | EV_WRITE)) == events) return 0;
    ev_io_stop(loop_ev(), &s->io);
    ev_io_set(&s->io, fd, events);
    ev_io_start(loop_ev(), &s->io);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants socket_action(TIMEOUT) in ms (-1: never). Only arms the
 * timer; curl_multi_* must not be called from here. */
static int http_on_curl_timer(CURLM *m, long ms, void *ud) {
    (void)m;
    (void)ud;
    ev_timer_stop(loop_ev(), &H.timer);
    if (ms >= 0) {
        ev_timer_set(&H.timer, (double)ms / 1000.0, 0.);
        ev_timer_start(loop_ev(), &H.timer);
    }
    return 0;
}

/* ---- options -------------------------------------------------------------------- */

struct http_opts {
    const char *fname;
    const char *url, *method, *cafile, *unix_socket, *bearer, *userpwd, *user, *password;
    const char *cert, *key, *cert_pem, *key_pem, *ca_pem; /* anchored by the options table */
    size_t cert_pem_len, key_pem_len, ca_pem_len;
    const char *body;
    size_t body_len;
    int body_idx, headers_idx;
    double timeout, connect_timeout;
    int follow, insecure, fixed_method; /* fixed_method: http.get / http.post */
    long max_redirects;
    size_t max_body;
};

static int opt_error(lua_State *L, struct http_opts *o, const char *key, const char *what) {
    return luaL_error(L, "%s: option '%s' %s", o->fname, key, what);
}

static const char *opt_string(lua_State *L, struct http_opts *o, const char *key) {
    if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, o, key, "must be a string");
    return lua_tostring(L, -1);
}

static double opt_seconds(lua_State *L, struct http_opts *o, const char *key) {
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) return 0; /* false: none */
    if (lua_type(L, -1) == LUA_TNUMBER) {
        double v = lua_tonumber(L, -1);
        if (!(v >= 0) || !isfinite(v) || v > 1e9) opt_error(L, o, key, "must be a duration between 0 and 1e9 seconds");
        return v;
    }
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    char err[160];
    double v;
    if (!s) opt_error(L, o, key, "must be a duration (seconds or \"500ms\") or false");
    if (units_duration(s, n, &v, err, sizeof err) != 0) opt_error(L, o, key, err);
    if (v > 1e9) opt_error(L, o, key, "must be at most 1e9 seconds");
    return v;
}

static size_t opt_bytes(lua_State *L, struct http_opts *o, const char *key) {
    double v;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        v = lua_tonumber(L, -1);
    } else {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        char err[160];
        if (!s) opt_error(L, o, key, "must be a size (bytes or \"64Mi\")");
        if (units_bytes(s, n, &v, err, sizeof err) != 0) opt_error(L, o, key, err);
    }
    if (!(v >= 1) || v > 1e15) opt_error(L, o, key, "must be a size >= 1 byte");
    return (size_t)v;
}

static void opt_auth(lua_State *L, struct http_opts *o) {
    if (lua_type(L, -1) == LUA_TSTRING) {
        o->userpwd = lua_tostring(L, -1);
        return;
    }
    if (!lua_istable(L, -1)) opt_error(L, o, "auth", "must be \"user:password\" or {user=, password=}");
    lua_getfield(L, -1, "user");
    lua_getfield(L, -2, "password");
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        opt_error(L, o, "auth", "needs string user and password");
    o->user = lua_tostring(L, -2); /* anchored by the auth table, itself in opts */
    o->password = lua_tostring(L, -1);
    lua_pop(L, 2);
}

/* One option: key at -2, value at -1. */
static void opt_one(lua_State *L, struct http_opts *o, const char *k) {
    if (!strcmp(k, "url") || !strcmp(k, "method")) {
        if (o->fixed_method) opt_error(L, o, k, "is given by the function and its arguments");
        if (k[0] == 'u') o->url = opt_string(L, o, k);
        else o->method = opt_string(L, o, k);
    } else if (!strcmp(k, "headers")) {
        if (!lua_istable(L, -1)) opt_error(L, o, k, "must be a table of name = value");
        o->headers_idx = -1; /* pushed to a fixed slot after the iteration */
    } else if (!strcmp(k, "body")) {
        if (o->fixed_method && o->body) opt_error(L, o, k, "is given as an argument");
        if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, o, k, "must be a string");
        o->body = lua_tolstring(L, -1, &o->body_len);
        o->body_idx = -1; /* pushed to a fixed slot after the iteration */
    } else if (!strcmp(k, "timeout")) {
        o->timeout = opt_seconds(L, o, k);
    } else if (!strcmp(k, "connect_timeout")) {
        o->connect_timeout = opt_seconds(L, o, k);
    } else if (!strcmp(k, "follow")) {
        o->follow = lua_toboolean(L, -1);
    } else if (!strcmp(k, "max_redirects")) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0) opt_error(L, o, k, "must be an integer >= 0");
        o->max_redirects = (long)lua_tointeger(L, -1);
    } else if (!strcmp(k, "cafile")) {
        o->cafile = opt_string(L, o, k);
    } else if (!strcmp(k, "insecure")) {
        o->insecure = lua_toboolean(L, -1);
    } else if (!strcmp(k, "unix_socket")) {
        o->unix_socket = opt_string(L, o, k);
    } else if (!strcmp(k, "bearer")) {
        o->bearer = opt_string(L, o, k);
    } else if (!strcmp(k, "auth")) {
        opt_auth(L, o);
    } else if (!strcmp(k, "max_body")) {
        o->max_body = opt_bytes(L, o, k);
    } else if (!strcmp(k, "cert")) {
        o->cert = opt_string(L, o, k);
    } else if (!strcmp(k, "key")) {
        o->key = opt_string(L, o, k);
    } else if (!strcmp(k, "cert_pem")) {
        o->cert_pem = opt_string(L, o, k), o->cert_pem_len = lua_rawlen(L, -1);
    } else if (!strcmp(k, "key_pem")) {
        o->key_pem = opt_string(L, o, k), o->key_pem_len = lua_rawlen(L, -1);
    } else if (!strcmp(k, "ca_pem")) {
        o->ca_pem = opt_string(L, o, k), o->ca_pem_len = lua_rawlen(L, -1);
    } else {
        opt_error(L, o, k,
                  "is unknown (url, method, headers, body, timeout, connect_timeout, follow, "
                  "max_redirects, cafile, insecure, unix_socket, bearer, auth, max_body, "
                  "cert, key, cert_pem, key_pem, ca_pem)");
    }
}

/* Read the options table at idx into o. Strings stay anchored by the table; the headers
 * table and the body get their own stack slots (the body is anchored from there). */
static void opts_read(lua_State *L, int idx, struct http_opts *o) {
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "%s: option names must be strings", o->fname);
        opt_one(L, o, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    if (o->headers_idx == -1) {
        lua_getfield(L, idx, "headers");
        o->headers_idx = lua_gettop(L);
    }
    if (o->body_idx == -1) {
        lua_getfield(L, idx, "body");
        o->body_idx = lua_gettop(L);
    }
}

static void opts_init(struct http_opts *o, const char *fname) {
    memset(o, 0, sizeof *o);
    o->fname = fname;
    o->timeout = H.timeout;
    o->max_redirects = 10;
    o->max_body = H.max_body;
}

/* ---- starting a request --------------------------------------------------------- */

static int header_line(struct http_req *r, const char *line) {
    struct curl_slist *l = curl_slist_append(r->req_headers, line);
    if (!l) return -1;
    r->req_headers = l;
    return 0;
}

/* prefix + "name: value", or "name;" for an empty value (curl drops a bare "name:"). */
static int header_add(struct http_req *r, const char *prefix, const char *name, size_t nlen, const char *v,
                      size_t vlen) {
    char small[512];
    size_t need = strlen(prefix) + nlen + vlen + 3;
    char *line = need <= sizeof small ? small : malloc(need);
    if (!line) return -1;
    if (vlen || *prefix) snprintf(line, need, "%.*s: %s%.*s", (int)nlen, name, prefix, (int)vlen, v);
    else snprintf(line, need, "%.*s;", (int)nlen, name);
    int rc = header_line(r, line);
    if (line != small) free(line);
    return rc;
}

static int has_crlf(const char *s, size_t n) { return memchr(s, '\r', n) || memchr(s, '\n', n); }

/* Check the headers table before anything is allocated: bad input raises. */
static void headers_check(lua_State *L, struct http_opts *o) {
    if (!o->headers_idx) return;
    lua_pushnil(L);
    while (lua_next(L, o->headers_idx)) {
        size_t nl, vl;
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "%s: header names must be strings", o->fname);
        const char *k = lua_tolstring(L, -2, &nl);
        int t = lua_type(L, -1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            luaL_error(L, "%s: header '%s' must be a string or a number", o->fname, k);
        const char *v = lua_tolstring(L, -1, &vl); /* a number becomes a string in place: fine */
        if (!nl || has_crlf(k, nl) || memchr(k, ':', nl) || has_crlf(v, vl))
            luaL_error(L, "%s: header '%s' has an invalid name or a CR/LF in its value", o->fname, k);
        lua_pop(L, 1);
    }
}

static int headers_build(lua_State *L, struct http_opts *o, struct http_req *r) {
    int has_type = 0;
    if (o->headers_idx) {
        lua_pushnil(L);
        while (lua_next(L, o->headers_idx)) {
            size_t nl, vl;
            const char *k = lua_tolstring(L, -2, &nl), *v = lua_tolstring(L, -1, &vl);
            if (nl == 12 && !strcasecmp(k, "content-type")) has_type = 1;
            int rc = header_add(r, "", k, nl, v, vl);
            lua_pop(L, 1);
            if (rc != 0) return lua_pop(L, 1), -1;
        }
    }
    if (o->bearer && header_add(r, "Bearer ", "Authorization", 13, o->bearer, strlen(o->bearer)) != 0) return -1;
    if (o->body && header_line(r, "Expect:") != 0) return -1; /* no 100-continue round trip */
    if (o->body && !has_type && header_line(r, "Content-Type:") != 0)
        return -1; /* not curl's invented application/x-www-form-urlencoded */
    return 0;
}

/* Client certificate, key and CA given as files or as PEM text (curl copies blobs, so the
 * Lua strings need not outlive this call). No Lua stack use: [-0, +0, -]. */
static void tls_configure(struct http_opts *o, struct http_req *r) {
    CURL *e = r->easy;
    struct curl_blob b;
    if (o->cert) curl_easy_setopt(e, CURLOPT_SSLCERT, o->cert), r->dirty = 1;
    if (o->key) curl_easy_setopt(e, CURLOPT_SSLKEY, o->key), r->dirty = 1;
    if (o->cert_pem) {
        b.data = (void *)o->cert_pem, b.len = o->cert_pem_len, b.flags = CURL_BLOB_COPY;
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &b), r->dirty = 1;
    }
    if (o->key_pem) {
        b.data = (void *)o->key_pem, b.len = o->key_pem_len, b.flags = CURL_BLOB_COPY;
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
        curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &b), r->dirty = 1;
    }
    if (o->ca_pem) {
        b.data = (void *)o->ca_pem, b.len = o->ca_pem_len, b.flags = CURL_BLOB_COPY;
        curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &b), r->dirty = 1;
    }
}

/* Everything beyond URL, GET/POST, headers and timeout marks the handle dirty. */
static void easy_configure(lua_State *L, struct http_opts *o, struct http_req *r) {
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->req_headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(o->timeout * 1000 + 0.5));
    r->timeout = o->timeout;
    r->connect_timeout = o->connect_timeout;
    r->max_body = o->max_body;
    const char *m = o->method ? o->method : o->body ? "POST" : "GET";
    if (o->body) {
        if (o->body_idx) {
            lua_pushvalue(L, o->body_idx);
            r->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->body);
        r->dirty = 1;
    } else if (!strcmp(m, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        r->dirty = 1;
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    if (strcmp(m, o->body ? "POST" : "GET") && strcmp(m, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
        r->dirty = 1;
    }
    if (o->follow) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, o->max_redirects);
        r->dirty = 1;
    }
    if (o->connect_timeout > 0) {
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(o->connect_timeout * 1000 + 0.5));
        r->dirty = 1;
    }
    if (o->cafile) curl_easy_setopt(e, CURLOPT_CAINFO, o->cafile), r->dirty = 1;
    if (o->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
        r->dirty = 1;
    }
    tls_configure(o, r);
    if (o->unix_socket) curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket), r->dirty = 1;
    if (o->userpwd) curl_easy_setopt(e, CURLOPT_USERPWD, o->userpwd), r->dirty = 1;
    if (o->user) {
        curl_easy_setopt(e, CURLOPT_USERNAME, o->user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, o->password);
        r->dirty = 1;
    }
}

/* Start the request described by o and park the calling task. [-0, +0, e] then yields. */
static int request_start(lua_State *L, struct http_opts *o) {
    if (!o->url || !*o->url) return luaL_error(L, "%s: a url is required", o->fname);
    if (o->method && (!*o->method || strpbrk(o->method, " \r\n")))
        return luaL_error(L, "%s: invalid method '%s'", o->fname, o->method);
    if (o->unix_socket && o->url[0] == '/') { /* a bare path on a Unix socket */
        o->url = lua_pushfstring(L, "http://localhost%s", o->url);
    }
    if (o->method && !o->body &&
        (!strcmp(o->method, "POST") || !strcmp(o->method, "PUT") || !strcmp(o->method, "PATCH")))
        o->body = ""; /* an empty body, sent with Content-Length: 0 */
    if ((o->cert || o->cert_pem) != (o->key || o->key_pem))
        return luaL_error(L, "%s: a client certificate needs a key, and a key a certificate", o->fname);
    if ((o->cert && o->cert_pem) || (o->key && o->key_pem) || (o->cafile && o->ca_pem))
        return luaL_error(L, "%s: give a file or PEM text, not both (cert/cert_pem, key/key_pem, cafile/ca_pem)",
                          o->fname);
    headers_check(L, o);
    loop_check_can_park(L, o->fname);
    struct http_req *r = req_acquire();
    const char *fail = NULL;
    if (!r) return lua_pushnil(L), lua_pushliteral(L, "out of memory"), 2;
    if (headers_build(L, o, r) != 0) fail = "out of memory";
    else easy_configure(L, o, r);
    CURLMcode mc = fail ? CURLM_OK : curl_multi_add_handle(H.multi, r->easy);
    if (fail || mc != CURLM_OK) {
        req_release(r);
        lua_pushnil(L);
        lua_pushstring(L, fail ? fail : curl_multi_strerror(mc));
        return 2;
    }
    r->task = loop_park(L, req_cancel, r);
    return lua_yield(L, 0);
}

/* http.request{url=, ...} -> response | nil, err  [-0, +1|2, e] */
static int l_http_request(lua_State *L) {
    struct http_opts o;
    opts_init(&o, "http.request");
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    opts_read(L, 1, &o);
    return request_start(L, &o);
}

/* http.get(url [, opts]) -> response | nil, err  [-0, +1|2, e] */
static int l_http_get(lua_State *L) {
    struct http_opts o;
    opts_init(&o, "http.get");
    o.url = luaL_checkstring(L, 1);
    o.method = "GET";
    o.fixed_method = 1;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_settop(L, 2);
        opts_read(L, 2, &o);
        if (o.body) return luaL_error(L, "http.get: a GET has no body (use http.request)");
    }
    return request_start(L, &o);
}

/* http.post(url, body [, opts]) -> response | nil, err  [-0, +1|2, e] */
static int l_http_post(lua_State *L) {
    struct http_opts o;
    opts_init(&o, "http.post");
    o.url = luaL_checkstring(L, 1);
    o.body = luaL_checklstring(L, 2, &o.body_len);
    o.body_idx = 2;
    o.method = "POST";
    o.fixed_method = 1;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_settop(L, 3);
        opts_read(L, 3, &o);
    }
    return request_start(L, &o);
}

/* ---- URL helpers ---------------------------------------------------------------- */

static int unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

static void add_encoded(luaL_Buffer *b, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            luaL_addchar(b, (char)c);
        } else {
            luaL_addchar(b, '%');
            luaL_addchar(b, hex[c >> 4]);
            luaL_addchar(b, hex[c & 15]);
        }
    }
}

/* http.urlencode(s) -> s  [-0, +1, e] */
static int l_http_urlencode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    add_encoded(&b, s, n);
    luaL_pushresult(&b);
    return 1;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* http.urldecode(s) -> s  [-0, +1, e] */
static int l_http_urldecode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            luaL_addchar(&b, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
            i += 2;
        } else {
            luaL_addchar(&b, s[i] == '+' ? ' ' : s[i]);
        }
    }
    luaL_pushresult(&b);
    return 1;
}

/* "k=v" percent-encoded, value at vidx. Nothing else touches the stack while the buffer
 * is open (luaL_Buffer keeps its box on top).  [-0, +1, e] */
static void push_pair(lua_State *L, const char *k, size_t kn, int vidx) {
    size_t vn;
    int t = lua_type(L, vidx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
        luaL_error(L, "http.encode_query: value of '%s' must be a string, number, boolean or list", k);
    const char *v = t == LUA_TBOOLEAN ? (lua_toboolean(L, vidx) ? "true" : "false") : lua_tolstring(L, vidx, &vn);
    if (t == LUA_TBOOLEAN) vn = strlen(v);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    add_encoded(&b, k, kn);
    luaL_addchar(&b, '=');
    add_encoded(&b, v, vn);
    luaL_pushresult(&b);
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* http.encode_query{k=v, k={v1, v2}} -> "k=v&k=v1&k=v2"  [-0, +1, e] */
static int l_http_encode_query(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    int n = 0;
    lua_newtable(L); /* 2: the keys, as strings */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "http.encode_query: keys must be strings");
        lua_pushvalue(L, -1);
        lua_rawseti(L, 2, ++n);
    }
    const char **keys = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *keys, 0); /* 3 */
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        keys[i - 1] = lua_tostring(L, -1); /* anchored by table 2 */
        lua_pop(L, 1);
    }
    qsort(keys, (size_t)n, sizeof *keys, cmp_cstr);
    lua_newtable(L); /* 4: the encoded pairs */
    int np = 0;
    for (int i = 0; i < n; i++) {
        size_t kn = strlen(keys[i]);
        lua_getfield(L, 1, keys[i]);
        if (lua_istable(L, -1)) {
            for (lua_Integer j = 1; lua_rawgeti(L, -1, j) != LUA_TNIL; j++) {
                push_pair(L, keys[i], kn, lua_gettop(L));
                lua_rawseti(L, 4, ++np);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        } else {
            push_pair(L, keys[i], kn, lua_gettop(L));
            lua_rawseti(L, 4, ++np);
        }
        lua_pop(L, 1);
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= np; i++) {
        if (i > 1) luaL_addchar(&b, '&');
        lua_rawgeti(L, 4, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return 1;
}

/* ---- settings and teardown ------------------------------------------------------ */

static void push_settings(lua_State *L) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, H.max_connections);
    lua_setfield(L, -2, "max_connections");
    lua_pushinteger(L, H.max_host_connections);
    lua_setfield(L, -2, "max_host_connections");
    lua_pushinteger(L, (lua_Integer)H.max_body);
    lua_setfield(L, -2, "max_body");
    lua_pushnumber(L, H.timeout);
    lua_setfield(L, -2, "timeout");
}

static long conf_count(lua_State *L, const char *key) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 1000000)
        luaL_error(L, "http.configure: '%s' must be an integer >= 0 (0: no limit)", key);
    return (long)lua_tointeger(L, -1);
}

/* http.configure{max_connections=, max_host_connections=, max_body=, timeout=} -> settings
 * The limits are curl's: transfers beyond them wait in curl's queue.  [-0, +1, e] */
static int l_http_configure(lua_State *L) {
    struct http_opts o;
    opts_init(&o, "http.configure");
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (!strcmp(k, "max_connections")) H.max_connections = conf_count(L, k);
            else if (!strcmp(k, "max_host_connections")) H.max_host_connections = conf_count(L, k);
            else if (!strcmp(k, "max_body")) H.max_body = opt_bytes(L, &o, k);
            else if (!strcmp(k, "timeout")) H.timeout = opt_seconds(L, &o, k);
            else
                luaL_error(L,
                           "http.configure: unknown setting '%s' (max_connections, "
                           "max_host_connections, max_body, timeout)",
                           k);
            lua_pop(L, 1);
        }
        curl_multi_setopt(H.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, H.max_connections);
        curl_multi_setopt(H.multi, CURLMOPT_MAX_HOST_CONNECTIONS, H.max_host_connections);
    }
    push_settings(L);
    return 1;
}

/* http.stats() -> {active=, pooled=, sockets=}  [-0, +1, m] */
static int l_http_stats(lua_State *L) {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, H.active_len);
    lua_setfield(L, -2, "active");
    lua_pushinteger(L, H.pool_len);
    lua_setfield(L, -2, "pooled");
    lua_pushinteger(L, H.socks_len);
    lua_setfield(L, -2, "sockets");
    return 1;
}

/* __gc of the state anchor: runs at lua_close. In-flight transfers belong to tasks that are
 * gone, so they are dropped without resuming anyone.  [-0, +0, -] */
static int l_http_shutdown(lua_State *L) {
    (void)L;
    if (!H.multi) return 0;
    while (H.active) {
        struct http_req *r = H.active;
        curl_multi_remove_handle(H.multi, r->easy);
        active_unlink(r);
        req_free(r); /* body_ref dies with the registry */
    }
    while (H.pool) {
        struct http_req *r = H.pool;
        H.pool = r->next;
        req_free(r);
    }
    H.pool_len = 0;
    ev_timer_stop(loop_ev(), &H.timer);
    curl_multi_cleanup(H.multi);
    while (H.socks) sock_free(H.socks);
    curl_global_cleanup();
    memset(&H, 0, sizeof H);
    return 0;
}

/* Once per process: check libcurl, make the multi handle, anchor l_http_shutdown.  [-0, +0, e] */
static int http_init(lua_State *L) {
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!(v->features & CURL_VERSION_ASYNCHDNS))
        return luaL_error(L,
                          "http: libcurl %s resolves names synchronously, which would block the "
                          "loop; install a libcurl with the threaded resolver or c-ares",
                          v->version);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return luaL_error(L, "http: curl_global_init failed");
    H.multi = curl_multi_init();
    if (!H.multi) return luaL_error(L, "http: curl_multi_init failed");
    H.max_body = 64u << 20;
    H.timeout = 30;
    /* curl's default cache (4 x the handles added at that moment) shrinks whenever transfers
     * finish together, closing kept-alive connections that the next requests then redo. */
    curl_multi_setopt(H.multi, CURLMOPT_MAXCONNECTS, HTTP_IDLE_MAX);
    curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, http_on_socket);
    curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, http_on_curl_timer);
    ev_timer_init(&H.timer, http_on_timer, 0., 0.);
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_http_shutdown);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, HTTP_STATE_KEY);
    return 0;
}

static const luaL_Reg http_funcs[] = {
    {"request", l_http_request},
    {"get", l_http_get},
    {"post", l_http_post},
    {"urlencode", l_http_urlencode},
    {"urldecode", l_http_urldecode},
    {"encode_query", l_http_encode_query},
    {"configure", l_http_configure},
    {"stats", l_http_stats},
    {NULL, NULL},
};

/* require "rollout.http" -> module  [-0, +1, e] */
int luaopen_rollout_http(lua_State *L) {
    if (!H.multi) http_init(L);
    luaL_newlib(L, http_funcs);
    return 1;
}
