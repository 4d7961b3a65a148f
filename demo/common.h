/* demo/common.h: small helpers shared by sample-service and loadgen.
 *
 * Both programs are single translation units built without the rollout core, so the
 * helpers are `static inline` (an unused one does not trip -Werror). Values are read
 * the way playbooks write them: durations "40ms", "1.5s", "2m" (a bare number is
 * seconds), ratios "0.2" or "20%". Parsers return false on anything else so the caller
 * can name the offending flag. */
#ifndef SAMPLE_COMMON_H
#define SAMPLE_COMMON_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read a non-negative decimal number; *end points after it. */
static inline bool parse_number(const char *s, double *out, const char **end) {
    char *e;
    if (*s == '\0' || *s == '-' || *s == '+' || *s == ' ') return false;
    double v = strtod(s, &e);
    if (e == s || !isfinite(v) || v < 0) return false;
    *out = v;
    *end = e;
    return true;
}

/* "250ms" → 0.25. Units: us, ms, s, m, h; none means seconds. */
static inline bool parse_duration(const char *s, double *out) {
    static const struct {
        const char *name;
        double scale;
    } units[] = {
        {"", 1}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600},
    };
    const char *rest;
    double v;
    if (!s || !parse_number(s, &v, &rest)) return false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(rest, units[i].name) == 0) {
            *out = v * units[i].scale;
            return true;
        }
    }
    return false;
}

/* "0.2" or "20%" → 0.2; must lie in [0, 1]. */
static inline bool parse_ratio(const char *s, double *out) {
    const char *rest;
    double v;
    if (!s || !parse_number(s, &v, &rest)) return false;
    if (strcmp(rest, "%") == 0) v /= 100;
    else if (*rest != '\0') return false;
    if (v > 1) return false;
    *out = v;
    return true;
}

/* A whole non-negative count ("100"). */
static inline bool parse_count(const char *s, unsigned long long *out) {
    char *e;
    if (!s || *s < '0' || *s > '9') return false;
    unsigned long long v = strtoull(s, &e, 10);
    if (*e != '\0') return false;
    *out = v;
    return true;
}

/* "127.0.0.1:8080" → host and port (host may be "[::1]" or empty for any address). */
static inline bool parse_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen) {
    const char *colon = strrchr(s, ':');
    if (!colon || colon[1] == '\0' || strlen(colon + 1) >= portlen) return false;
    const char *h = s;
    size_t n = (size_t)(colon - s);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') { /* bracketed IPv6 literal */
        h++;
        n -= 2;
    }
    if (n >= hostlen) return false;
    memcpy(host, h, n);
    host[n] = '\0';
    snprintf(port, portlen, "%s", colon + 1);
    for (const char *p = port; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

/* A growable output buffer; `off` is how much has already been written to the socket. */
struct buf {
    char *data;
    size_t len, cap, off;
};

static inline void buf_reserve(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        fputs("out of memory\n", stderr);
        abort();
    }
    b->data = p;
    b->cap = cap;
}

static inline void buf_append(struct buf *b, const void *data, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

__attribute__((format(printf, 2, 3))) static inline void buf_printf(struct buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Drop what has been written so far, keeping the unwritten tail at the front. */
static inline void buf_compact(struct buf *b) {
    if (b->off == 0) return;
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
}

static inline void buf_free(struct buf *b) {
    free(b->data);
    *b = (struct buf){0};
}

/* Append s as a JSON string literal (quotes included). Control bytes and bytes >= 0x80
 * become \u00XX: a body cut at 32 bytes may end inside a UTF-8 sequence, and the line
 * must stay valid JSON whatever the server sent. */
static inline void buf_json_string(struct buf *b, const char *s, size_t n) {
    buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') buf_printf(b, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f) buf_printf(b, "\\u%04x", ch);
        else buf_append(b, &s[i], 1);
    }
    buf_append(b, "\"", 1);
}

#endif
