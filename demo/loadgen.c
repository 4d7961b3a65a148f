/* loadgen: steady, open-loop HTTP load over keep-alive connections, on libev.
 *
 * Request k is due at start + k/rps whatever happened to request k-1: a slow server
 * does not slow the load down (the mistake closed-loop generators make, which hides
 * latency -- "coordinated omission"). Latency is measured from the moment a request was
 * due, so lateness on our side counts against the server too. Each connection carries
 * one request at a time. A request that falls due while every connection is busy waits
 * in a short backlog -- room for one per connection plus 100 ms of the rate, for at
 * most --timeout -- and is counted as `late` when it goes out; beyond that it is
 * `dropped`. The backlog absorbs the burst after a stall of our own (a loaded machine
 * deschedules us); `dropped` says plainly that --connections is too small for
 * rps x latency.
 *
 * Output, one JSON object per line on stdout: every --report-interval the counts of
 * that interval, and at the end {"summary":true,...} with the totals. `by_body` counts
 * responses by the first line of their body (at most 32 bytes): the sample service puts
 * its version there, so a test can read each version's share of the traffic. */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "http_parse.h"

#define BODY_KEY_MAX 32
#define MAX_BODY_KEYS 64 /* distinct bodies tracked; the rest go under "(other)" */
#define RESPONSE_HEAD_MAX 65536
#define RECONNECT_BACKOFF 0.05 /* after a failure: do not spin on a dead server */
#define BACKLOG_SECONDS 0.1    /* of the rate, on top of one per connection */
#define HIST_MIN 1e-6          /* histogram range: 1 us ... */
#define HIST_GROWTH 1.01       /* ... in 1 % steps: quantiles within 0.5 % */
#define HIST_BUCKETS 2400      /* ... up to ~ 23 000 s */

/* ---- statistics ---------------------------------------------------------------- */

struct histogram {
    uint32_t counts[HIST_BUCKETS];
    uint64_t n;
    double sum, max;
};

struct body_count {
    char key[BODY_KEY_MAX + 1];
    uint64_t count;
};

/* Counts over one reporting interval, or over the whole run. */
struct window {
    uint64_t sent, ok, errors_5xx, errors_other, conn_errors, timeouts, dropped, late;
    uint64_t by_code[600];
    struct body_count bodies[MAX_BODY_KEYS];
    int nbodies;
    uint64_t other_bodies;
    struct histogram latency;
};

/* ---- options and connections --------------------------------------------------- */

struct options {
    char host[256], port[16], path[2048];
    const char *method;
    double rps, duration, report_interval, timeout;
    int connections;
    struct buf headers; /* extra "Name: value\r\n" lines */
};

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_OPEN };

/* What is known about the response being read. */
struct response {
    bool head_done;
    int status;
    size_t head_len;
    long content_length; /* -1: unknown */
    bool chunked, close;
};

struct conn {
    ev_io rd, wr;
    ev_timer timer; /* reconnect backoff while down, the request timeout while busy */
    int fd;
    enum conn_state state;
    bool busy;
    double due; /* when the request in flight was due */
    struct buf out, in;
    struct response resp;
};

static struct {
    struct ev_loop *loop;
    struct options opt;
    struct addrinfo *addr;
    struct buf request; /* the request bytes, built once */
    struct conn *conns;
    uint64_t next_k; /* index of the next request to fall due */
    double start, stop_issuing_at;
    bool stopping, finished;
    int inflight;
    double *backlog; /* due times of requests waiting for a connection (a ring) */
    int backlog_head, backlog_len, backlog_cap;
    struct window interval, total;
    ev_timer tick, report;
    ev_prepare dispatch; /* before each poll: hand the backlog to freed connections */
    ev_signal sigterm, sigint;
} G;

static void conn_connect(struct conn *c);

/* ---- histogram ----------------------------------------------------------------- */

static void histogram_add(struct histogram *h, double seconds) {
    int i = 0;
    if (seconds > HIST_MIN) i = (int)(log(seconds / HIST_MIN) / log(HIST_GROWTH)) + 1;
    if (i >= HIST_BUCKETS) i = HIST_BUCKETS - 1;
    h->counts[i]++;
    h->n++;
    h->sum += seconds;
    if (seconds > h->max) h->max = seconds;
}

/* The q-quantile in seconds: the geometric middle of the bucket holding it. */
static double histogram_quantile(const struct histogram *h, double q) {
    uint64_t rank = (uint64_t)ceil(q * (double)h->n), seen = 0;
    if (rank == 0) rank = 1;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            if (i == 0) return HIST_MIN;
            double v = HIST_MIN * pow(HIST_GROWTH, i - 0.5);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---- counting ------------------------------------------------------------------ */

static void window_count_body(struct window *w, const char *key) {
    for (int i = 0; i < w->nbodies; i++) {
        if (strcmp(w->bodies[i].key, key) == 0) {
            w->bodies[i].count++;
            return;
        }
    }
    if (w->nbodies == MAX_BODY_KEYS) {
        w->other_bodies++;
        return;
    }
    snprintf(w->bodies[w->nbodies].key, sizeof w->bodies[0].key, "%s", key);
    w->bodies[w->nbodies++].count = 1;
}

static void window_count_response(struct window *w, int status, double latency, const char *body_key) {
    if (status >= 200 && status < 400) w->ok++;
    else if (status >= 500 && status < 600) w->errors_5xx++;
    else w->errors_other++;
    if (status >= 100 && status < 600) w->by_code[status]++;
    histogram_add(&w->latency, latency);
    window_count_body(w, body_key);
}

/* Every event is counted twice: in the interval being reported and in the totals. */
#define COUNT(field) (G.interval.field++, G.total.field++)

/* ---- JSON output --------------------------------------------------------------- */

static void json_quantile(struct buf *b, const char *name, const struct histogram *h, double q) {
    if (h->n == 0) buf_printf(b, ",\"%s\":null", name);
    else buf_printf(b, ",\"%s\":%.3f", name, histogram_quantile(h, q) * 1e3);
}

static void json_maps(struct buf *b, const struct window *w) {
    buf_printf(b, ",\"by_code\":{");
    const char *sep = "";
    for (int code = 100; code < 600; code++) {
        if (w->by_code[code]) {
            buf_printf(b, "%s\"%d\":%llu", sep, code, (unsigned long long)w->by_code[code]);
            sep = ",";
        }
    }
    buf_printf(b, "},\"by_body\":{");
    sep = "";
    for (int i = 0; i < w->nbodies; i++) {
        buf_printf(b, "%s", sep);
        buf_json_string(b, w->bodies[i].key, strlen(w->bodies[i].key));
        buf_printf(b, ":%llu", (unsigned long long)w->bodies[i].count);
        sep = ",";
    }
    if (w->other_bodies) buf_printf(b, "%s\"(other)\":%llu", sep, (unsigned long long)w->other_bodies);
    buf_printf(b, "}");
}

static void json_window(struct buf *b, const struct window *w) {
    buf_printf(b,
               ",\"sent\":%llu,\"ok\":%llu,\"errors_5xx\":%llu,\"errors_other\":%llu,"
               "\"conn_errors\":%llu,\"timeouts\":%llu,\"dropped\":%llu,\"late\":%llu",
               (unsigned long long)w->sent, (unsigned long long)w->ok, (unsigned long long)w->errors_5xx,
               (unsigned long long)w->errors_other, (unsigned long long)w->conn_errors, (unsigned long long)w->timeouts,
               (unsigned long long)w->dropped, (unsigned long long)w->late);
    json_quantile(b, "p50_ms", &w->latency, 0.50);
    json_quantile(b, "p90_ms", &w->latency, 0.90);
    json_quantile(b, "p99_ms", &w->latency, 0.99);
    if (w->latency.n)
        buf_printf(b, ",\"mean_ms\":%.3f,\"max_ms\":%.3f", w->latency.sum / (double)w->latency.n * 1e3,
                   w->latency.max * 1e3);
    else buf_printf(b, ",\"mean_ms\":null,\"max_ms\":null");
    json_maps(b, w);
}

static void print_line(struct buf *b) {
    buf_append(b, "}\n", 2);
    fwrite(b->data, 1, b->len, stdout);
    fflush(stdout); /* a reader follows the lines as they come */
    buf_free(b);
}

static void report_interval(double now) {
    struct buf b = {0};
    buf_printf(&b, "{\"t\":%.3f", now - G.start);
    json_window(&b, &G.interval);
    print_line(&b);
    memset(&G.interval, 0, sizeof G.interval);
}

static void report_summary(double now) {
    double issued_for = (G.stopping ? G.stop_issuing_at : now) - G.start;
    struct buf b = {0};
    buf_printf(&b,
               "{\"summary\":true,\"t\":%.3f,\"duration\":%.3f,\"target_rps\":%g,\"rps\":%.2f,"
               "\"connections\":%d,\"inflight\":%d",
               now - G.start, issued_for, G.opt.rps, issued_for > 0 ? (double)G.total.sent / issued_for : 0.0,
               G.opt.connections, G.inflight);
    json_window(&b, &G.total);
    print_line(&b);
}

/* ---- finishing ----------------------------------------------------------------- */

static void finish(void) {
    if (G.finished) return;
    G.finished = true;
    double now = ev_now(G.loop);
    if (G.opt.report_interval > 0 && (G.interval.sent || G.interval.latency.n || G.interval.dropped ||
                                      G.interval.conn_errors || G.interval.timeouts))
        report_interval(now);
    report_summary(now);
    ev_break(G.loop, EVBREAK_ALL);
}

/* Stop issuing; the summary waits for the requests in flight (each has a timeout).
 * Requests still in the backlog were not sent within the run: dropped. */
static void stop_issuing(void) {
    if (G.stopping) return;
    G.stopping = true;
    while (G.backlog_len > 0) {
        G.backlog_len--;
        COUNT(dropped);
    }
    G.stop_issuing_at = ev_now(G.loop);
    ev_timer_stop(G.loop, &G.tick);
    if (G.inflight == 0) finish();
}

/* ---- connection lifecycle ------------------------------------------------------ */

static void conn_request_done(struct conn *c) {
    c->busy = false;
    G.inflight--;
    ev_timer_stop(G.loop, &c->timer);
    if (G.stopping && G.inflight == 0) finish();
}

/* Close the socket; reconnect at once after a clean close, after a pause after an
 * error. A request in flight is lost: the caller has already counted why. */
static void conn_reset(struct conn *c, bool after_error) {
    ev_io_stop(G.loop, &c->rd);
    ev_io_stop(G.loop, &c->wr);
    ev_timer_stop(G.loop, &c->timer);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = CONN_DOWN;
    c->out.len = c->out.off = 0;
    c->in.len = c->in.off = 0;
    c->resp = (struct response){0};
    if (c->busy) conn_request_done(c);
    if (G.stopping) return;
    ev_timer_set(&c->timer, after_error ? RECONNECT_BACKOFF : 0, 0);
    ev_timer_start(G.loop, &c->timer);
}

static void conn_error(struct conn *c) {
    COUNT(conn_errors);
    conn_reset(c, true);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    struct conn *c = w->data;
    if (c->state == CONN_DOWN) {
        conn_connect(c);
    } else if (c->busy) {
        /* The answer may still come, but not on this connection: start afresh. */
        COUNT(timeouts);
        conn_reset(c, false);
    }
}

/* ---- writing ------------------------------------------------------------------- */

static void conn_flush(struct conn *c) {
    while (c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out.off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(G.loop, &c->wr);
            return;
        } else {
            conn_error(c);
            return;
        }
    }
    c->out.len = c->out.off = 0;
    ev_io_stop(G.loop, &c->wr);
}

/* A non-blocking connect completes when the socket turns writable. */
static void conn_connected(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
        conn_error(c);
        return;
    }
    c->state = CONN_OPEN;
    ev_io_start(G.loop, &c->rd);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop, (void)revents;
    struct conn *c = w->data;
    if (c->state == CONN_CONNECTING) {
        conn_connected(c);
        if (c->state != CONN_OPEN) return;
    }
    conn_flush(c);
}

static void conn_connect(struct conn *c) {
    const struct addrinfo *ai = G.addr;
    c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (c->fd < 0) {
        conn_error(c);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = CONN_CONNECTING;
    if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        conn_error(c);
        return;
    }
    ev_io_set(&c->rd, c->fd, EV_READ);
    ev_io_set(&c->wr, c->fd, EV_WRITE);
    ev_io_start(G.loop, &c->wr); /* fires when the connect completes */
}

/* Hand request `due` to c. On a connection still connecting the bytes wait in `out`. */
static void conn_send_request(struct conn *c, double due) {
    c->busy = true;
    c->due = due;
    G.inflight++;
    COUNT(sent);
    buf_append(&c->out, G.request.data, G.request.len);
    ev_timer_stop(G.loop, &c->timer);
    ev_timer_set(&c->timer, G.opt.timeout, 0);
    ev_timer_start(G.loop, &c->timer);
    if (c->state == CONN_OPEN) conn_flush(c);
    else ev_io_start(G.loop, &c->wr);
}

/* ---- reading responses --------------------------------------------------------- */

static bool response_parse_head(struct conn *c) {
    size_t head = http_head_end(c->in.data, c->in.len);
    if (head == 0) return c->in.len < RESPONSE_HEAD_MAX; /* false: an endless head is an error */
    const char *pos = c->in.data, *end = c->in.data + head;
    struct span line = http_next_line(&pos, end);
    struct response *r = &c->resp;
    *r = (struct response){.content_length = -1, .head_len = head};
    if (line.n < 12 || strncmp(line.p, "HTTP/1.", 7) != 0 || line.p[8] != ' ') return false;
    r->status = atoi(line.p + 9);
    if (r->status < 100 || r->status > 599) return false;
    r->close = line.p[7] == '0'; /* HTTP/1.0 answers close unless told otherwise */
    while ((line = http_next_line(&pos, end)).n > 0) {
        const char *colon = memchr(line.p, ':', line.n);
        if (!colon) return false;
        struct span name = {line.p, (size_t)(colon - line.p)};
        struct span value = {colon + 1, (size_t)(line.p + line.n - colon - 1)};
        while (value.n && (*value.p == ' ' || *value.p == '\t')) value.p++, value.n--;
        if (span_ieq(name, "Content-Length")) r->content_length = strtol(value.p, NULL, 10);
        else if (span_ieq(name, "Transfer-Encoding")) r->chunked = http_has_token(value, "chunked");
        else if (span_ieq(name, "Connection") && http_has_token(value, "close")) r->close = true;
        else if (span_ieq(name, "Connection") && http_has_token(value, "keep-alive")) r->close = false;
    }
    r->head_done = true;
    return true;
}

/* Copy body bytes into the first-line key while it has room and no newline yet. */
static void body_key_feed(char *key, size_t *keylen, bool *key_done, const char *p, size_t n) {
    for (size_t i = 0; i < n && !*key_done; i++) {
        if (p[i] == '\n' || p[i] == '\r' || *keylen == BODY_KEY_MAX) *key_done = true;
        else key[(*keylen)++] = p[i];
    }
    key[*keylen] = '\0';
}

/* Walk a chunked body in buf[0..n). Returns its encoded length once the last chunk and
 * trailers are in, 0 if more is needed, -1 if malformed. Fills the body key. */
static long chunked_length(const char *buf, size_t n, char *key, size_t *keylen, bool *key_done) {
    size_t pos = 0;
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        if (!nl) return 0;
        char *e;
        long size = strtol(buf + pos, &e, 16);
        if (e == buf + pos || size < 0) return -1;
        pos = (size_t)(nl - buf) + 1;
        if (size == 0) break;
        if (n - pos < (size_t)size + 2) return 0;
        body_key_feed(key, keylen, key_done, buf + pos, (size_t)size);
        pos += (size_t)size;
        pos += buf[pos] == '\r' ? 2 : 1;
    }
    size_t trailers = http_head_end(buf + pos - 2, n - pos + 2); /* blank line after chunks */
    if (trailers == 0) return 0;
    return (long)(pos - 2 + trailers);
}

/* How many body bytes the response occupies: >= 0 when complete, -2 when more is
 * needed, -1 if malformed. `eof` completes a close-delimited body. */
static long response_body_length(struct conn *c, char *key, size_t *keylen, bool eof) {
    const struct response *r = &c->resp;
    const char *body = c->in.data + r->head_len;
    size_t have = c->in.len - r->head_len;
    bool key_done = false;
    *keylen = 0;
    key[0] = '\0';
    bool no_body = (r->status >= 100 && r->status < 200) || r->status == 204 || r->status == 304 ||
                   strcmp(G.opt.method, "HEAD") == 0;
    if (no_body) return 0;
    if (r->chunked) {
        long n = chunked_length(body, have, key, keylen, &key_done);
        return n == 0 ? -2 : n;
    }
    size_t want = r->content_length >= 0 ? (size_t)r->content_length : have;
    if (have < want || (r->content_length < 0 && !eof)) return -2;
    body_key_feed(key, keylen, &key_done, body, want);
    return (long)want;
}

/* Complete responses at the front of `in` are counted; returns false if c was reset. */
static bool conn_parse(struct conn *c, bool eof) {
    for (;;) {
        if (!c->resp.head_done && !response_parse_head(c)) {
            conn_error(c);
            return false;
        }
        if (!c->resp.head_done) return true;
        char key[BODY_KEY_MAX + 1];
        size_t keylen;
        long body = response_body_length(c, key, &keylen, eof);
        if (body == -2) return true;
        if (body < 0 || !c->busy) { /* malformed, or an answer nobody asked for */
            conn_error(c);
            return false;
        }
        double latency = ev_time() - c->due;
        window_count_response(&G.interval, c->resp.status, latency, key);
        window_count_response(&G.total, c->resp.status, latency, key);
        size_t used = c->resp.head_len + (size_t)body;
        memmove(c->in.data, c->in.data + used, c->in.len - used);
        c->in.len -= used;
        bool close_after = c->resp.close || eof;
        c->resp = (struct response){0};
        conn_request_done(c);
        if (close_after) {
            conn_reset(c, false);
            return false;
        }
        if (c->in.len == 0) return true;
    }
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop, (void)revents;
    struct conn *c = w->data;
    buf_reserve(&c->in, 16384);
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n < 0) {
        conn_error(c);
        return;
    }
    c->in.len += (size_t)n;
    if (!conn_parse(c, n == 0) || n > 0) return;
    /* EOF with nothing half-read: the server closed an idle keep-alive connection,
     * which is normal. EOF in the middle of an answer is an error. */
    if (c->busy || c->in.len > 0) conn_error(c);
    else conn_reset(c, false);
}

/* ---- the schedule -------------------------------------------------------------- */

/* Connections are tried round-robin from where the last request went, so the load
 * spreads over all of them (a proxy balancing per connection sees every one used). */
static struct conn *conn_free(void) {
    static int next;
    for (int i = 0; i < G.opt.connections; i++) {
        struct conn *c = &G.conns[(next + i) % G.opt.connections];
        if (c->state != CONN_DOWN && !c->busy) {
            next = (next + i + 1) % G.opt.connections;
            return c;
        }
    }
    return NULL;
}

static double due_time(uint64_t k) { return G.start + (double)k / G.opt.rps; }

/* Send waiting requests, oldest first, while connections are free. One that has
 * waited longer than the request timeout would only time out: drop it. */
static void backlog_dispatch(void) {
    struct conn *c;
    while (G.backlog_len > 0 && (c = conn_free()) != NULL) {
        double due = G.backlog[G.backlog_head];
        G.backlog_head = (G.backlog_head + 1) % G.backlog_cap;
        G.backlog_len--;
        if (ev_time() - due > G.opt.timeout) {
            COUNT(dropped);
            continue;
        }
        COUNT(late);
        conn_send_request(c, due);
    }
}

/* A request falls due: send it, park it in the backlog, or drop it. */
static void request_due(double due) {
    struct conn *c = G.backlog_len == 0 ? conn_free() : NULL;
    if (c) {
        conn_send_request(c, due);
    } else if (G.backlog_len < G.backlog_cap) {
        G.backlog[(G.backlog_head + G.backlog_len) % G.backlog_cap] = due;
        G.backlog_len++;
    } else {
        COUNT(dropped);
    }
}

/* Issue every request that has fallen due, then sleep until the next one (or the end
 * of the run, whichever comes first). */
static void on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    double now = ev_time();
    double end = G.opt.duration > 0 ? G.start + G.opt.duration : INFINITY;
    while (due_time(G.next_k) <= now && due_time(G.next_k) < end) {
        request_due(due_time(G.next_k));
        G.next_k++;
    }
    if (now >= end) {
        stop_issuing();
        return;
    }
    ev_timer_set(w, fmin(due_time(G.next_k), end) - now, 0);
    ev_timer_start(G.loop, w);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents) {
    (void)loop, (void)w, (void)revents;
    backlog_dispatch();
}

static void on_report(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)w, (void)revents;
    report_interval(ev_now(G.loop));
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
    (void)loop, (void)w, (void)revents;
    stop_issuing();
    finish(); /* asked to stop: do not wait for the stragglers (see "inflight") */
}

/* ---- options ------------------------------------------------------------------- */

static bool parse_url(const char *url, struct options *o) {
    if (strncmp(url, "http://", 7) != 0) return false;
    const char *auth = url + 7;
    const char *slash = strchr(auth, '/');
    size_t alen = slash ? (size_t)(slash - auth) : strlen(auth);
    char hostport[320];
    if (alen == 0 || alen >= 300) return false;
    memcpy(hostport, auth, alen);
    hostport[alen] = '\0';
    const char *colon = strrchr(hostport, ':'), *bracket = strrchr(hostport, ']');
    if (!colon || (bracket && bracket > colon)) /* no port, or only the colons of [::1] */
        strcat(hostport, ":80");
    if (!parse_hostport(hostport, o->host, sizeof o->host, o->port, sizeof o->port)) return false;
    snprintf(o->path, sizeof o->path, "%s", slash ? slash : "/");
    return o->host[0] != '\0';
}

static bool parse_header(const char *h, struct options *o) {
    const char *colon = strchr(h, ':');
    if (!colon || colon == h || strpbrk(h, "\r\n")) return false;
    buf_printf(&o->headers, "%s\r\n", h);
    return true;
}

static void usage(FILE *to) {
    fputs("usage: loadgen --url http://HOST:PORT/PATH [options]\n"
          "  --rps R                requests per second, open loop (default 100)\n"
          "  --connections C        keep-alive connections (default 8)\n"
          "  --duration D           run for D (30s, 2m); default until SIGTERM/SIGINT\n"
          "  --report-interval D    one JSON line per interval (default 1s; 0 = summary only)\n"
          "  --timeout D            per request (default 5s)\n"
          "  --header 'Name: value' extra request header (repeatable)\n"
          "  --method M             request method (default GET)\n",
          to);
}

static const struct option long_options[] = {
    {"url", required_argument, 0, 'u'},
    {"rps", required_argument, 0, 'r'},
    {"connections", required_argument, 0, 'c'},
    {"duration", required_argument, 0, 'd'},
    {"report-interval", required_argument, 0, 'i'},
    {"timeout", required_argument, 0, 't'},
    {"header", required_argument, 0, 'H'},
    {"method", required_argument, 0, 'm'},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};

static bool option_value(int opt, const char *arg, struct options *o, bool *have_url) {
    const char *rest;
    unsigned long long n;
    switch (opt) {
    case 'u':
        return (*have_url = parse_url(arg, o));
    case 'r':
        return parse_number(arg, &o->rps, &rest) && *rest == '\0' && o->rps > 0;
    case 'c':
        if (!parse_count(arg, &n) || n < 1 || n > 10000) return false;
        o->connections = (int)n;
        return true;
    case 'd':
        return parse_duration(arg, &o->duration);
    case 'i':
        return parse_duration(arg, &o->report_interval);
    case 't':
        return parse_duration(arg, &o->timeout) && o->timeout > 0;
    case 'H':
        return parse_header(arg, o);
    case 'm':
        o->method = arg;
        return *arg && strlen(arg) < 16 && !strpbrk(arg, " \r\n");
    default:
        return false;
    }
}

/* Returns 0 to run, or an exit status + 1. */
static int parse_options(int argc, char **argv, struct options *o) {
    *o = (struct options){.method = "GET", .rps = 100, .connections = 8, .report_interval = 1, .timeout = 5};
    bool have_url = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            return 1;
        }
        if (opt == '?') {
            usage(stderr);
            return 3;
        }
        if (!option_value(opt, optarg, o, &have_url)) {
            const char *name = "?";
            for (const struct option *lo = long_options; lo->name; lo++)
                if (lo->val == opt) name = lo->name;
            fprintf(stderr, "loadgen: bad value for --%s: \"%s\"\n", name, optarg);
            return 3;
        }
    }
    if (!have_url || optind < argc) {
        fputs(have_url ? "loadgen: unexpected argument\n" : "loadgen: --url http://HOST:PORT/PATH is required\n",
              stderr);
        return 3;
    }
    return 0;
}

/* ---- main ---------------------------------------------------------------------- */

static bool resolve(void) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(G.opt.host, G.opt.port, &hints, &G.addr);
    if (rc != 0) {
        fprintf(stderr, "loadgen: cannot resolve %s: %s\n", G.opt.host, gai_strerror(rc));
        return false;
    }
    return true;
}

/* Does an extra header line set this header already? */
static bool has_header(const char *name) {
    size_t n = strlen(name);
    if (G.opt.headers.len == 0) return false;
    const char *p = G.opt.headers.data, *end = p + G.opt.headers.len;
    while (p && p < end) {
        if ((size_t)(end - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') return true;
        p = memchr(p, '\n', (size_t)(end - p));
        p = p ? p + 1 : NULL;
    }
    return false;
}

/* The request bytes, built once. A --header Host replaces ours (virtual hosts on a
 * proxy); the other --header lines are added as given. */
static void build_request(void) {
    bool v6 = strchr(G.opt.host, ':') != NULL;
    buf_printf(&G.request, "%s %s HTTP/1.1\r\n", G.opt.method, G.opt.path);
    if (!has_header("Host"))
        buf_printf(&G.request, "Host: %s%s%s:%s\r\n", v6 ? "[" : "", G.opt.host, v6 ? "]" : "", G.opt.port);
    if (!has_header("User-Agent")) buf_printf(&G.request, "User-Agent: rollout-loadgen\r\n");
    if (G.opt.headers.len) buf_append(&G.request, G.opt.headers.data, G.opt.headers.len);
    buf_append(&G.request, "\r\n", 2);
}

static void start_connections(void) {
    G.conns = calloc((size_t)G.opt.connections, sizeof *G.conns);
    G.backlog_cap = G.opt.connections + (int)ceil(G.opt.rps * BACKLOG_SECONDS);
    G.backlog = calloc((size_t)G.backlog_cap, sizeof *G.backlog);
    if (!G.conns || !G.backlog) {
        fputs("loadgen: out of memory\n", stderr);
        exit(1);
    }
    for (int i = 0; i < G.opt.connections; i++) {
        struct conn *c = &G.conns[i];
        c->fd = -1;
        ev_io_init(&c->rd, on_readable, -1, EV_READ);
        ev_io_init(&c->wr, on_writable, -1, EV_WRITE);
        ev_init(&c->timer, on_timer);
        c->rd.data = c->wr.data = c->timer.data = c;
        conn_connect(c);
    }
}

static void start_schedule(void) {
    G.start = ev_time();
    ev_timer_init(&G.tick, on_tick, 0, 0);
    ev_timer_start(G.loop, &G.tick);
    ev_prepare_init(&G.dispatch, on_prepare);
    ev_prepare_start(G.loop, &G.dispatch);
    if (G.opt.report_interval > 0) {
        ev_timer_init(&G.report, on_report, G.opt.report_interval, G.opt.report_interval);
        ev_timer_start(G.loop, &G.report);
    }
    ev_signal_init(&G.sigterm, on_signal, SIGTERM);
    ev_signal_init(&G.sigint, on_signal, SIGINT);
    ev_signal_start(G.loop, &G.sigterm);
    ev_signal_start(G.loop, &G.sigint);
}

int main(int argc, char **argv) {
    int rc = parse_options(argc, argv, &G.opt);
    if (rc) return rc - 1;
    signal(SIGPIPE, SIG_IGN);
    if (!resolve()) return 1;
    G.loop = ev_default_loop(EVFLAG_AUTO);
    build_request();
    start_connections();
    start_schedule();
    ev_run(G.loop, 0);
    freeaddrinfo(G.addr);
    return 0;
}
