/* sample-service: the application a canary release moves traffic between.
 *
 * It plays the role podinfo plays for Flagger: a small HTTP/1.1 server on libev that
 * answers `/` with its version, exposes liveness, readiness and Prometheus metrics, and
 * misbehaves on request -- errors, log-normal latency, a switch to failing after a time
 * or a number of requests, a crash -- so that every rollback path of a playbook can be
 * exercised against a real process. Faults can also be changed live through
 * /admin/fault, which is what demos and tests use instead of restarting.
 * `metrics_frozen=1` there makes /metrics repeat the request counters and the latency
 * histogram as they were at that moment while `/` goes on answering: a broken exporter or
 * a stuck scrape pipeline, whose canary shows no new requests (`metrics_frozen=0` thaws).
 *
 * Endpoints:  /  /health  /ready  /metrics  GET|POST /admin/fault
 * Only `/` counts toward the request metrics: probes and scrapes must not dilute the
 * error rate or the latency a gate judges. OPTIONS (HAProxy's default health check)
 * answers 200 anywhere and counts nowhere.
 *
 * One process, one loop, non-blocking sockets. Nothing sleeps: an injected latency is a
 * per-connection ev_timer, during which the connection reads but does not parse, so
 * pipelined requests are answered in order. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "http_parse.h"

#define PROGRAM_VERSION "1.0.0"
#define IN_CAP (REQUEST_HEAD_MAX + REQUEST_BODY_MAX)
#define OUT_HIGH_WATER (1 << 20) /* stop reading a client that does not read its answers */
#define IDLE_TIMEOUT 60.0        /* close keep-alive connections nobody uses */
#define LINGER_TIMEOUT 2.0       /* how long a closing connection drains its input */
#define Z99 2.3263478740408408   /* standard normal 99th percentile */

/* ---- fault settings ------------------------------------------------------------ */

/* What `/` does to a request: fail it with probability error_rate, and delay it by a
 * log-normal draw with median p50 and 99th percentile p99 (0 = no added latency). */
struct fault {
    double error_rate;
    double p50, p99;
};

struct options {
    const char *version;
    const char *listen;
    const char *port_file;
    struct fault fault;    /* from the start */
    struct fault fail;     /* after --fail-after-* */
    bool fail_latency_set; /* --fail-latency-* given: otherwise latency stays as is */
    double fail_after_seconds;
    unsigned long long fail_after_requests;
    double crash_after_seconds;
    unsigned long long crash_after_requests;
    double slow_health;
    bool unhealthy;
    bool not_ready;
    bool metrics_frozen; /* /metrics repeats S.frozen (set through /admin/fault only) */
    bool seeded;
    unsigned long long seed;
};

/* ---- metrics ------------------------------------------------------------------- */

/* Renard R10 steps, ~10 per decade from 0.5 ms to 10 s: fine enough that
 * histogram_quantile(0.99, ...) lands within ~12 % of the true P99 anywhere from 1 ms
 * to 10 s. */
static const double latency_buckets[] = {
    0.0005, 0.00063, 0.0008, 0.001,  0.00125, 0.0016, 0.002, 0.0025, 0.00315, 0.004, 0.005,
    0.0063, 0.008,   0.01,   0.0125, 0.016,   0.02,   0.025, 0.0315, 0.04,    0.05,  0.063,
    0.08,   0.1,     0.125,  0.16,   0.2,     0.25,   0.315, 0.4,    0.5,     0.63,  0.8,
    1,      1.25,    1.6,    2,      2.5,     3.15,   4,     5,      6.3,     8,     10,
};
#define NBUCKETS (sizeof latency_buckets / sizeof latency_buckets[0])
#define MAX_COUNTERS 32

struct request_counter {
    char method[16];
    int code;
    unsigned long long count;
};

struct metrics {
    unsigned long long buckets[NBUCKETS]; /* non-cumulative; summed when rendered */
    unsigned long long count;
    double sum;
    struct request_counter counters[MAX_COUNTERS];
    int ncounters;
};

/* ---- connections --------------------------------------------------------------- */

enum pending_kind { PENDING_NONE, PENDING_ROOT, PENDING_HEALTH };

/* A response decided now and sent when the injected delay runs out. */
struct pending {
    enum pending_kind kind;
    int status;
    char method[16];
    bool head, keep_alive, http10;
    double t0; /* monotonic seconds when the request was parsed */
};

struct conn {
    ev_io rd, wr;
    ev_timer delay, idle;
    int fd;
    char in[IN_CAP];
    size_t in_len;
    struct buf out;
    struct pending pending; /* kind != NONE: parsing is paused until it is sent */
    bool closing;           /* close once `out` is flushed */
    bool peer_done;         /* the client closed its side */
    bool draining;          /* answered and shut down for writing; discarding input */
};

/* ---- the service --------------------------------------------------------------- */

static struct {
    struct ev_loop *loop;
    struct options opt;
    struct fault fault; /* in force now */
    bool failing;
    unsigned long long root_requests;
    struct metrics metrics;
    struct metrics frozen; /* what /metrics shows while opt.metrics_frozen */
    uint64_t rng;
    double start_wall;
    int listen_fd;
    ev_io accept_w;
    ev_timer accept_retry, fail_timer, crash_timer;
    ev_signal sigterm, sigint;
} S;

static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void conn_flush(struct conn *c);

/* Request durations use the monotonic clock, read when needed: ev_now is the time the
 * loop woke up, which would hide the time spent on earlier events of the same wakeup. */
static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- randomness ---------------------------------------------------------------- */

/* splitmix64: tiny, fast and good enough to draw faults; reproducible with --seed. */
static uint64_t random_next(void) {
    uint64_t z = (S.rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): never 0, so log() below is safe. */
static double random_uniform(void) { return ((double)(random_next() >> 11) + 0.5) / 9007199254740992.0; }

static double random_normal(void) { return sqrt(-2 * log(random_uniform())) * cos(2 * M_PI * random_uniform()); }

/* A delay with median p50 and 99th percentile p99: log-normal with
 * sigma = ln(p99/p50) / z99. p99 unset means a fixed delay of p50. */
static double fault_delay(const struct fault *f) {
    if (f->p50 <= 0) return 0;
    double sigma = f->p99 > f->p50 ? log(f->p99 / f->p50) / Z99 : 0;
    return f->p50 * exp(sigma * random_normal());
}

/* A p99 needs a p50 to be a spread around, and cannot lie below it. */
static bool fault_valid(const struct fault *f) { return f->p99 == 0 || (f->p50 > 0 && f->p99 >= f->p50); }

/* ---- metrics ------------------------------------------------------------------- */

static void metrics_count(const char *method, int code) {
    struct metrics *m = &S.metrics;
    for (int i = 0; i < m->ncounters; i++) {
        if (m->counters[i].code == code && strcmp(m->counters[i].method, method) == 0) {
            m->counters[i].count++;
            return;
        }
    }
    if (m->ncounters == MAX_COUNTERS) return; /* only `/` is counted and it answers 200 or 500: never reached */
    struct request_counter *rc = &m->counters[m->ncounters++];
    snprintf(rc->method, sizeof rc->method, "%s", method);
    rc->code = code;
    rc->count = 1;
}

static void metrics_record(const char *method, int code, double seconds) {
    struct metrics *m = &S.metrics;
    size_t i = 0;
    while (i < NBUCKETS && seconds > latency_buckets[i]) i++;
    if (i < NBUCKETS) m->buckets[i]++;
    m->count++;
    m->sum += seconds;
    metrics_count(method, code);
}

/* The request metrics /metrics shows: live, or the copy taken when they were frozen. */
static const struct metrics *metrics_shown(void) { return S.opt.metrics_frozen ? &S.frozen : &S.metrics; }

static void metrics_render_histogram(struct buf *b) {
    const struct metrics *m = metrics_shown();
    const char *v = S.opt.version;
    buf_printf(b, "# HELP http_request_duration_seconds Time to answer / (including injected latency).\n"
                  "# TYPE http_request_duration_seconds histogram\n");
    unsigned long long cumulative = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cumulative += m->buckets[i];
        buf_printf(b, "http_request_duration_seconds_bucket{version=\"%s\",le=\"%g\"} %llu\n", v, latency_buckets[i],
                   cumulative);
    }
    buf_printf(b, "http_request_duration_seconds_bucket{version=\"%s\",le=\"+Inf\"} %llu\n", v, m->count);
    buf_printf(b, "http_request_duration_seconds_sum{version=\"%s\"} %.9g\n", v, m->sum);
    buf_printf(b, "http_request_duration_seconds_count{version=\"%s\"} %llu\n", v, m->count);
}

static void metrics_render_counters(struct buf *b) {
    const struct metrics *m = metrics_shown();
    buf_printf(b, "# HELP http_requests_total Requests to / by method and status code.\n"
                  "# TYPE http_requests_total counter\n");
    if (m->ncounters == 0) /* an absent series reads as "no data"; a zero reads as zero */
        buf_printf(b, "http_requests_total{version=\"%s\",method=\"GET\",code=\"200\"} 0\n", S.opt.version);
    for (int i = 0; i < m->ncounters; i++)
        buf_printf(b, "http_requests_total{version=\"%s\",method=\"%s\",code=\"%d\"} %llu\n", S.opt.version,
                   m->counters[i].method, m->counters[i].code, m->counters[i].count);
}

static long resident_bytes(void) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%*s %ld", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages * sysconf(_SC_PAGESIZE);
}

static void metrics_render_process(struct buf *b) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu =
        (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    buf_printf(b,
               "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
               "# TYPE process_cpu_seconds_total counter\n"
               "process_cpu_seconds_total %.6f\n",
               cpu);
    buf_printf(b,
               "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
               "# TYPE process_resident_memory_bytes gauge\n"
               "process_resident_memory_bytes %ld\n",
               resident_bytes());
    buf_printf(b,
               "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
               "# TYPE process_start_time_seconds gauge\n"
               "process_start_time_seconds %.3f\n",
               S.start_wall);
}

static void metrics_render_fault(struct buf *b) {
    buf_printf(b,
               "# HELP sample_info The version this instance reports.\n"
               "# TYPE sample_info gauge\n"
               "sample_info{version=\"%s\"} 1\n",
               S.opt.version);
    buf_printf(b,
               "# HELP sample_fault_error_rate Configured share of / answered 500.\n"
               "# TYPE sample_fault_error_rate gauge\n"
               "sample_fault_error_rate{version=\"%s\"} %g\n",
               S.opt.version, S.fault.error_rate);
}

static void metrics_render(struct buf *b) {
    metrics_render_histogram(b);
    metrics_render_counters(b);
    metrics_render_process(b);
    metrics_render_fault(b);
}

/* ---- fault switches ------------------------------------------------------------ */

static void fault_switch_to_failing(void) {
    if (S.failing) return;
    S.failing = true;
    S.fault.error_rate = S.opt.fail.error_rate;
    if (S.opt.fail_latency_set) {
        S.fault.p50 = S.opt.fail.p50;
        S.fault.p99 = S.opt.fail.p99;
    }
}

/* A crash is meant to look like one: no goodbye to clients, no flushing. The one line
 * on stderr is for whoever reads the crash loop's logs. */
static void crash(const char *why) {
    fprintf(stderr, "sample-service %s: crashing (%s)\n", S.opt.version, why);
    _exit(1);
}

static void on_fail_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)w, (void)revents;
    fault_switch_to_failing();
}

static void on_crash_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)w, (void)revents;
    crash("--crash-after-seconds");
}

/* ---- responses ----------------------------------------------------------------- */

static const char *status_text(int status) {
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* The Connection header: HTTP/1.1 keeps alive unless told; an HTTP/1.0 client that
 * asked for keep-alive needs to hear it confirmed. */
static const char *connection_header(const struct pending *p) {
    if (!p->keep_alive) return "Connection: close\r\n";
    return p->http10 ? "Connection: keep-alive\r\n" : "";
}

/* Queue one response; the connection closes after it unless the request allows more. */
static void conn_send(struct conn *c, int status, const char *ctype, const char *body, size_t n,
                      const struct pending *p) {
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nX-Version: %s\r\n%s\r\n", status,
               status_text(status), ctype, n, S.opt.version, connection_header(p));
    if (!p->head) buf_append(&c->out, body, n);
    if (!p->keep_alive) c->closing = true;
}

static void conn_send_text(struct conn *c, int status, const char *text, const struct pending *p) {
    conn_send(c, status, "text/plain; charset=utf-8", text, strlen(text), p);
}

/* The body of `/` starts with the version on a line of its own, for 200 and 500 alike:
 * the load generator counts responses by their first line to measure each version's
 * share of traffic. */
static void send_root(struct conn *c, const struct pending *p) {
    char body[256];
    if (p->status == 200) snprintf(body, sizeof body, "%s\n", S.opt.version);
    else snprintf(body, sizeof body, "%s\ninjected error\n", S.opt.version);
    conn_send_text(c, p->status, body, p);
    metrics_record(p->method, p->status, monotonic_now() - p->t0);
}

static void send_health(struct conn *c, const struct pending *p) {
    conn_send_text(c, p->status, p->status == 200 ? "ok\n" : "unhealthy\n", p);
}

static void conn_send_pending(struct conn *c) {
    struct pending p = c->pending;
    c->pending.kind = PENDING_NONE;
    if (p.kind == PENDING_ROOT) send_root(c, &p);
    else if (p.kind == PENDING_HEALTH) send_health(c, &p);
}

static void on_delay(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    struct conn *c = w->data;
    conn_send_pending(c);
    conn_process(c); /* also answers requests pipelined behind the delayed one */
}

/* Send now, or after `delay` seconds without blocking anything else. */
static void conn_answer_after(struct conn *c, const struct pending *p, double delay) {
    c->pending = *p;
    if (delay <= 0) {
        conn_send_pending(c);
        return;
    }
    ev_timer_set(&c->delay, delay, 0);
    ev_timer_start(S.loop, &c->delay);
}

/* ---- /admin/fault -------------------------------------------------------------- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode a form component into out (NUL-terminated, truncated to outlen). */
static void form_decode(struct span s, char *out, size_t outlen) {
    size_t o = 0;
    for (size_t i = 0; i < s.n && o + 1 < outlen; i++) {
        char ch = s.p[i];
        if (ch == '+') {
            ch = ' ';
        } else if (ch == '%' && i + 2 < s.n && hexval(s.p[i + 1]) >= 0 && hexval(s.p[i + 2]) >= 0) {
            ch = (char)(hexval(s.p[i + 1]) * 16 + hexval(s.p[i + 2]));
            i += 2;
        }
        out[o++] = ch;
    }
    out[o] = '\0';
}

static bool parse_flag(const char *v, bool *out) {
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on")) *out = true;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off")) *out = false;
    else return false;
    return true;
}

/* Apply one key=value to the draft settings; on failure write the reason to err. */
static bool admin_set(const char *key, const char *val, struct fault *f, struct options *o, char *err, size_t errlen) {
    bool ok;
    if (!strcmp(key, "error_rate")) ok = parse_ratio(val, &f->error_rate);
    else if (!strcmp(key, "latency_p50")) ok = parse_duration(val, &f->p50);
    else if (!strcmp(key, "latency_p99")) ok = parse_duration(val, &f->p99);
    else if (!strcmp(key, "slow_health")) ok = parse_duration(val, &o->slow_health);
    else if (!strcmp(key, "unhealthy")) ok = parse_flag(val, &o->unhealthy);
    else if (!strcmp(key, "metrics_frozen")) ok = parse_flag(val, &o->metrics_frozen);
    else if (!strcmp(key, "ready")) {
        bool ready;
        ok = parse_flag(val, &ready);
        o->not_ready = !ready;
    } else {
        snprintf(err, errlen,
                 "unknown parameter \"%s\" (error_rate, latency_p50, latency_p99, "
                 "slow_health, unhealthy, ready, metrics_frozen)\n",
                 key);
        return false;
    }
    if (!ok) snprintf(err, errlen, "bad value for %s: \"%s\"\n", key, val);
    return ok;
}

/* Apply every key=value pair of a form (query string or body). */
static bool admin_apply_form(struct span form, struct fault *f, struct options *o, char *err, size_t errlen) {
    const char *p = form.p, *end = form.p + form.n;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (stop > p) {
            char key[64], val[64];
            form_decode((struct span){p, (size_t)((eq ? eq : stop) - p)}, key, sizeof key);
            form_decode(eq ? (struct span){eq + 1, (size_t)(stop - eq - 1)} : (struct span){stop, 0}, val, sizeof val);
            if (!admin_set(key, val, f, o, err, errlen)) return false;
        }
        p = stop + 1;
    }
    return true;
}

static void admin_render(struct buf *b) {
    buf_printf(b,
               "{\"version\":\"%s\",\"error_rate\":%g,\"latency_p50_ms\":%g,\"latency_p99_ms\":%g,"
               "\"failing\":%s,\"unhealthy\":%s,\"ready\":%s,\"slow_health_ms\":%g,\"requests\":%llu,"
               "\"metrics_frozen\":%s}\n",
               S.opt.version, S.fault.error_rate, S.fault.p50 * 1e3, S.fault.p99 * 1e3, S.failing ? "true" : "false",
               S.opt.unhealthy ? "true" : "false", S.opt.not_ready ? "false" : "true", S.opt.slow_health * 1e3,
               S.root_requests, S.opt.metrics_frozen ? "true" : "false");
}

/* GET shows the settings in force; POST (or PUT) changes them: all or nothing. */
static void handle_admin_fault(struct conn *c, const struct request *r, const struct pending *p) {
    bool write = span_eq(r->method, "POST") || span_eq(r->method, "PUT");
    if (!write && !span_eq(r->method, "GET") && !span_eq(r->method, "HEAD")) {
        conn_send_text(c, 405, "use GET or POST\n", p);
        return;
    }
    if (write) {
        struct fault f = S.fault;
        struct options o = S.opt;
        char err[256];
        if (!admin_apply_form(r->query, &f, &o, err, sizeof err) ||
            !admin_apply_form(r->body, &f, &o, err, sizeof err)) {
            conn_send_text(c, 400, err, p);
            return;
        }
        if (!fault_valid(&f)) {
            conn_send_text(c, 400, "latency_p99 needs a latency_p50 at or below it\n", p);
            return;
        }
        if (o.metrics_frozen && !S.opt.metrics_frozen)
            S.frozen = S.metrics; /* from now on /metrics shows this moment */
        S.fault = f;
        S.opt = o;
    }
    struct buf b = {0};
    admin_render(&b);
    conn_send(c, 200, "application/json", b.data, b.len, p);
    buf_free(&b);
}

/* ---- routing ------------------------------------------------------------------- */

static void handle_root(struct conn *c, struct pending *p) {
    S.root_requests++;
    if (S.opt.crash_after_requests && S.root_requests > S.opt.crash_after_requests) crash("--crash-after-requests");
    if (S.opt.fail_after_requests && S.root_requests > S.opt.fail_after_requests) fault_switch_to_failing();
    p->kind = PENDING_ROOT;
    p->status = random_uniform() < S.fault.error_rate ? 500 : 200;
    conn_answer_after(c, p, fault_delay(&S.fault));
}

static void handle_health(struct conn *c, struct pending *p) {
    p->kind = PENDING_HEALTH;
    p->status = S.opt.unhealthy ? 503 : 200;
    conn_answer_after(c, p, S.opt.slow_health);
}

static void handle_metrics(struct conn *c, const struct pending *p) {
    struct buf b = {0};
    metrics_render(&b);
    conn_send(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, p);
    buf_free(&b);
}

static void conn_route(struct conn *c, const struct request *r) {
    struct pending p = {
        .head = span_eq(r->method, "HEAD"),
        .keep_alive = r->keep_alive,
        .http10 = r->http10,
        .t0 = monotonic_now(),
    };
    snprintf(p.method, sizeof p.method, "%.*s", (int)r->method.n, r->method.p);
    if (span_eq(r->method, "OPTIONS"))
        conn_send_text(c, 200, "", &p); /* HAProxy's default check: not traffic, no faults */
    else if (span_eq(r->path, "/")) handle_root(c, &p);
    else if (span_eq(r->path, "/health") || span_eq(r->path, "/healthz")) handle_health(c, &p);
    else if (span_eq(r->path, "/ready") || span_eq(r->path, "/readyz"))
        conn_send_text(c, S.opt.not_ready ? 503 : 200, S.opt.not_ready ? "not ready\n" : "ready\n", &p);
    else if (span_eq(r->path, "/metrics")) handle_metrics(c, &p);
    else if (span_eq(r->path, "/admin/fault")) handle_admin_fault(c, r, &p);
    else conn_send_text(c, 404, "not found\n", &p);
}

/* ---- connection I/O ------------------------------------------------------------ */

/* Parse and answer what is buffered, in order, until a response must wait, the input
 * runs out, or the connection is closing; then flush. Every event on a connection ends
 * here, and c may be freed when it returns. */
static void conn_process(struct conn *c) {
    while (c->pending.kind == PENDING_NONE && !c->closing && c->in_len > 0) {
        struct request r;
        enum parse_result res = http_parse_request(c->in, c->in_len, &r);
        if (res == PARSE_MORE) {
            if (c->in_len == IN_CAP) /* cannot happen with the limits above; be safe */
                res = PARSE_BAD;
            else break;
        }
        if (res == PARSE_BAD) {
            static const struct pending bad = {.keep_alive = false};
            c->in_len = 0;
            conn_send_text(c, 400, "bad request\n", &bad);
            break;
        }
        conn_route(c, &r);
        memmove(c->in, c->in + r.length, c->in_len - r.length);
        c->in_len -= r.length;
    }
    if (c->peer_done && c->pending.kind == PENDING_NONE)
        c->closing = true; /* nothing more can arrive; finish what was asked */
    conn_flush(c);
}

/* Read while there is room; reading stops (and the watcher with it) when the buffer is
 * full or the client is not collecting its answers -- the kernel then pushes back. */
static void conn_update_reading(struct conn *c) {
    bool want = !c->peer_done && !c->closing && c->in_len < IN_CAP && c->out.len < OUT_HIGH_WATER;
    if (want && !ev_is_active(&c->rd)) ev_io_start(S.loop, &c->rd);
    else if (!want && ev_is_active(&c->rd)) ev_io_stop(S.loop, &c->rd);
}

/* Close after the last answer. If the client may still be sending (a refused oversized
 * request, Connection: close with more pipelined behind it), closing with unread input
 * makes the kernel send a reset that can destroy the answer before the client reads it.
 * So shut down our side and discard input until the client closes or LINGER_TIMEOUT
 * passes -- the "lingering close" of Apache and NGINX. */
static void conn_finish(struct conn *c) {
    if (c->peer_done || shutdown(c->fd, SHUT_WR) < 0) {
        conn_close(c);
        return;
    }
    c->draining = true;
    ev_io_stop(S.loop, &c->wr);
    ev_io_start(S.loop, &c->rd);
    c->idle.repeat = LINGER_TIMEOUT;
    ev_timer_again(S.loop, &c->idle);
}

/* Write what we can; the rest waits for the write watcher. Closes (and frees c) when
 * a closing connection has nothing left to say, so only conn_process calls it, last. */
static void conn_flush(struct conn *c) {
    while (c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out.off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_close(c); /* EPIPE, ECONNRESET: the client is gone */
        return;
    }
    buf_compact(&c->out);
    if (c->out.len == 0 && c->closing && c->pending.kind == PENDING_NONE) {
        conn_finish(c);
        return;
    }
    if (c->out.len > 0 && !ev_is_active(&c->wr)) ev_io_start(S.loop, &c->wr);
    else if (c->out.len == 0 && ev_is_active(&c->wr)) ev_io_stop(S.loop, &c->wr);
    conn_update_reading(c);
}

static void conn_drain(struct conn *c) {
    char scratch[16384];
    ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) conn_close(c);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop, (void)revents;
    struct conn *c = w->data;
    if (c->draining) {
        conn_drain(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    ev_timer_again(S.loop, &c->idle);
    if (n == 0) c->peer_done = true;
    else c->in_len += (size_t)n;
    conn_process(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop, (void)revents;
    struct conn *c = w->data;
    ev_timer_again(S.loop, &c->idle);
    conn_process(c);
}

/* A slow response is not idleness: only close when nothing is in flight (or when a
 * lingering close has waited long enough). */
static void on_idle(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    struct conn *c = w->data;
    if (!c->draining && (c->pending.kind != PENDING_NONE || c->out.len > 0)) ev_timer_again(S.loop, &c->idle);
    else conn_close(c);
}

static void conn_close(struct conn *c) {
    ev_io_stop(S.loop, &c->rd);
    ev_io_stop(S.loop, &c->wr);
    ev_timer_stop(S.loop, &c->delay);
    ev_timer_stop(S.loop, &c->idle);
    close(c->fd);
    buf_free(&c->out);
    free(c);
}

static struct conn *conn_new(int fd) {
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = fd;
    ev_io_init(&c->rd, on_readable, fd, EV_READ);
    ev_io_init(&c->wr, on_writable, fd, EV_WRITE);
    ev_init(&c->delay, on_delay);
    ev_init(&c->idle, on_idle);
    c->idle.repeat = IDLE_TIMEOUT;
    c->rd.data = c->wr.data = c->delay.data = c->idle.data = c;
    ev_io_start(S.loop, &c->rd);
    ev_timer_again(S.loop, &c->idle);
    return c;
}

/* ---- listening ----------------------------------------------------------------- */

static void on_accept_retry(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)w, (void)revents;
    ev_io_start(S.loop, &S.accept_w);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop, (void)revents;
    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: the pending connection stays queued and the
                 * watcher would spin on it. Pause accepting briefly instead. */
                ev_io_stop(S.loop, &S.accept_w);
                ev_timer_start(S.loop, &S.accept_retry);
            }
            return; /* EAGAIN, or a connection aborted before we took it */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (!conn_new(fd)) close(fd);
    }
}

static int listen_on(const char *hostport) {
    char host[256], port[16];
    if (!parse_hostport(hostport, host, sizeof host, port, sizeof port)) {
        fprintf(stderr, "sample-service: --listen wants HOST:PORT, got \"%s\"\n", hostport);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "sample-service: cannot resolve %s: %s\n", hostport, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
        fprintf(stderr, "sample-service: cannot listen on %s: %s\n", hostport, strerror(errno));
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int bound_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -1;
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Write the port atomically (temp file + rename) so a reader never sees half of it. */
static bool write_port_file(const char *path, int port) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return false;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return false;
    }
    return true;
}

/* ---- options ------------------------------------------------------------------- */

static void usage(FILE *to) {
    fputs("usage: sample-service [options]\n"
          "  --version V               version string to report (default v1.0.0)\n"
          "  --listen HOST:PORT        address (default 127.0.0.1:8080; port 0 picks one)\n"
          "  --port-file PATH          write the bound port to PATH once listening\n"
          "  --error-rate R            share of / answered 500 (0.05 or 5%)\n"
          "  --latency-p50 D --latency-p99 D   added log-normal latency (40ms, 1.5s)\n"
          "  --fail-after-seconds N | --fail-after-requests N   then switch to:\n"
          "  --fail-error-rate R       (default 1.0)\n"
          "  --fail-latency-p50 D --fail-latency-p99 D\n"
          "  --crash-after-seconds N | --crash-after-requests N   exit(1) abruptly\n"
          "  --slow-health D           /health answers after D\n"
          "  --unhealthy               /health answers 503\n"
          "  --not-ready               /ready answers 503\n"
          "  --seed N                  seed the fault dice\n"
          "  --print-version           print this program's version and exit\n"
          "endpoints: / /health /ready /metrics, GET|POST /admin/fault?error_rate=..&latency_p50=..\n",
          to);
}

enum {
    OPT_VERSION = 256,
    OPT_LISTEN,
    OPT_PORT_FILE,
    OPT_ERROR_RATE,
    OPT_P50,
    OPT_P99,
    OPT_FAIL_SECONDS,
    OPT_FAIL_REQUESTS,
    OPT_FAIL_ERROR_RATE,
    OPT_FAIL_P50,
    OPT_FAIL_P99,
    OPT_CRASH_SECONDS,
    OPT_CRASH_REQUESTS,
    OPT_SLOW_HEALTH,
    OPT_UNHEALTHY,
    OPT_NOT_READY,
    OPT_SEED,
    OPT_PRINT_VERSION,
    OPT_HELP,
};

/* Same order as the enum: option_value's error message indexes this by opt. */
static const struct option long_options[] = {
    {"version", required_argument, 0, OPT_VERSION},
    {"listen", required_argument, 0, OPT_LISTEN},
    {"port-file", required_argument, 0, OPT_PORT_FILE},
    {"error-rate", required_argument, 0, OPT_ERROR_RATE},
    {"latency-p50", required_argument, 0, OPT_P50},
    {"latency-p99", required_argument, 0, OPT_P99},
    {"fail-after-seconds", required_argument, 0, OPT_FAIL_SECONDS},
    {"fail-after-requests", required_argument, 0, OPT_FAIL_REQUESTS},
    {"fail-error-rate", required_argument, 0, OPT_FAIL_ERROR_RATE},
    {"fail-latency-p50", required_argument, 0, OPT_FAIL_P50},
    {"fail-latency-p99", required_argument, 0, OPT_FAIL_P99},
    {"crash-after-seconds", required_argument, 0, OPT_CRASH_SECONDS},
    {"crash-after-requests", required_argument, 0, OPT_CRASH_REQUESTS},
    {"slow-health", required_argument, 0, OPT_SLOW_HEALTH},
    {"unhealthy", no_argument, 0, OPT_UNHEALTHY},
    {"not-ready", no_argument, 0, OPT_NOT_READY},
    {"seed", required_argument, 0, OPT_SEED},
    {"print-version", no_argument, 0, OPT_PRINT_VERSION},
    {"help", no_argument, 0, OPT_HELP},
    {0, 0, 0, 0},
};

static bool option_value(int opt, const char *arg, struct options *o) {
    switch (opt) {
    case OPT_VERSION:
        o->version = arg;
        return *arg != '\0' && strlen(arg) < 128 && !strpbrk(arg, "\"\\\n");
    case OPT_LISTEN:
        o->listen = arg;
        return true;
    case OPT_PORT_FILE:
        o->port_file = arg;
        return true;
    case OPT_ERROR_RATE:
        return parse_ratio(arg, &o->fault.error_rate);
    case OPT_P50:
        return parse_duration(arg, &o->fault.p50);
    case OPT_P99:
        return parse_duration(arg, &o->fault.p99);
    case OPT_FAIL_SECONDS:
        return parse_duration(arg, &o->fail_after_seconds);
    case OPT_FAIL_REQUESTS:
        return parse_count(arg, &o->fail_after_requests);
    case OPT_FAIL_ERROR_RATE:
        return parse_ratio(arg, &o->fail.error_rate);
    case OPT_FAIL_P50:
        o->fail_latency_set = true;
        return parse_duration(arg, &o->fail.p50);
    case OPT_FAIL_P99:
        o->fail_latency_set = true;
        return parse_duration(arg, &o->fail.p99);
    case OPT_CRASH_SECONDS:
        return parse_duration(arg, &o->crash_after_seconds);
    case OPT_CRASH_REQUESTS:
        return parse_count(arg, &o->crash_after_requests);
    case OPT_SLOW_HEALTH:
        return parse_duration(arg, &o->slow_health);
    case OPT_SEED:
        o->seeded = true;
        return parse_count(arg, &o->seed);
    default:
        return false;
    }
}

/* Returns 0 to run, or an exit status + 1 (so 1 means "exit 0"). */
static int parse_options(int argc, char **argv, struct options *o) {
    *o = (struct options){.version = "v1.0.0", .listen = "127.0.0.1:8080", .fail.error_rate = 1.0};
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt) {
        case OPT_PRINT_VERSION:
            printf("sample-service %s\n", PROGRAM_VERSION);
            return 1;
        case OPT_HELP:
            usage(stdout);
            return 1;
        case OPT_UNHEALTHY:
            o->unhealthy = true;
            break;
        case OPT_NOT_READY:
            o->not_ready = true;
            break;
        case '?':
            usage(stderr);
            return 3;
        default:
            if (!option_value(opt, optarg, o)) {
                fprintf(stderr, "sample-service: bad value for --%s: \"%s\"\n", long_options[opt - OPT_VERSION].name,
                        optarg);
                return 3;
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sample-service: unexpected argument \"%s\"\n", argv[optind]);
        return 3;
    }
    if (!fault_valid(&o->fault) || !fault_valid(&o->fail)) {
        fputs("sample-service: a --*latency-p99 needs a --*latency-p50 at or below it\n", stderr);
        return 3;
    }
    return 0;
}

/* ---- main ---------------------------------------------------------------------- */

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* Installed before anything slow so an early SIGTERM still means a clean exit 0. */
static void start_signals(void) {
    signal(SIGPIPE, SIG_IGN);
    ev_signal_init(&S.sigterm, on_signal, SIGTERM);
    ev_signal_init(&S.sigint, on_signal, SIGINT);
    ev_signal_start(S.loop, &S.sigterm);
    ev_signal_start(S.loop, &S.sigint);
}

static void start_timers(void) {
    ev_timer_init(&S.accept_retry, on_accept_retry, 0.1, 0);
    ev_timer_init(&S.fail_timer, on_fail_timer, S.opt.fail_after_seconds, 0);
    ev_timer_init(&S.crash_timer, on_crash_timer, S.opt.crash_after_seconds, 0);
    if (S.opt.fail_after_seconds > 0) ev_timer_start(S.loop, &S.fail_timer);
    if (S.opt.crash_after_seconds > 0) ev_timer_start(S.loop, &S.crash_timer);
}

static void seed_random(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    S.start_wall = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    S.rng = S.opt.seeded ? S.opt.seed : (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
}

int main(int argc, char **argv) {
    int rc = parse_options(argc, argv, &S.opt);
    if (rc) return rc - 1;
    S.fault = S.opt.fault;
    seed_random();
    S.loop = ev_default_loop(EVFLAG_AUTO);
    start_signals();
    S.listen_fd = listen_on(S.opt.listen);
    if (S.listen_fd < 0) return 1;
    int port = bound_port(S.listen_fd);
    if (S.opt.port_file && !write_port_file(S.opt.port_file, port)) {
        fprintf(stderr, "sample-service: cannot write %s: %s\n", S.opt.port_file, strerror(errno));
        return 1;
    }
    ev_io_init(&S.accept_w, on_accept, S.listen_fd, EV_READ);
    ev_io_start(S.loop, &S.accept_w);
    start_timers();
    fprintf(stderr,
            "sample-service %s: version %s listening on %s (port %d), error_rate %g, "
            "latency p50 %gms p99 %gms\n",
            PROGRAM_VERSION, S.opt.version, S.opt.listen, port, S.fault.error_rate, S.fault.p50 * 1e3,
            S.fault.p99 * 1e3);
    ev_run(S.loop, 0);
    close(S.listen_fd);
    return 0;
}
