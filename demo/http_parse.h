/* demo/http_parse.h: the HTTP/1.x request-head parser of sample-service.
 *
 * Deliberately strict: the service sits behind HAProxy/NGINX or answers curl and the
 * load generator, so anything unusual (a chunked request body, a folded header, a
 * second differing Content-Length, a head larger than REQUEST_HEAD_MAX) is rejected
 * rather than guessed at; the caller answers 400 and closes. The parser keeps no state
 * between calls: it is handed the whole buffer each time and either finds one complete
 * request at its front or asks for more bytes. Pointers in struct request point into
 * that buffer and are valid until the caller consumes the request. */
#ifndef SAMPLE_HTTP_PARSE_H
#define SAMPLE_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#define REQUEST_HEAD_MAX 8192 /* request line + headers */
#define REQUEST_BODY_MAX 8192 /* only /admin/fault reads a body (form parameters) */

struct span {
    const char *p;
    size_t n;
};

struct request {
    struct span method, path, query, body;
    bool http10;     /* HTTP/1.0: keep-alive only when asked for */
    bool keep_alive; /* the client allows another request on this connection */
    size_t length;   /* head + body: the bytes this request occupies */
};

enum parse_result { PARSE_OK, PARSE_MORE, PARSE_BAD };

static inline bool span_eq(struct span s, const char *lit) {
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static inline bool span_ieq(struct span s, const char *lit) {
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

/* RFC 9110 tchar: the bytes allowed in a method or header name. */
static inline bool http_is_tchar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Where the head ends (index just past the blank line), or 0 if it has not arrived.
 * A bare LF line ending is accepted, as RFC 9112 allows recipients to. */
static inline size_t http_head_end(const char *buf, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n') continue;
        if (i + 1 < len && buf[i + 1] == '\n') return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
    }
    return 0;
}

/* Split off the next line of the head; the line excludes CR LF. */
static inline struct span http_next_line(const char **pos, const char *end) {
    const char *start = *pos;
    const char *nl = memchr(start, '\n', (size_t)(end - start));
    if (!nl) nl = end;
    *pos = nl < end ? nl + 1 : end;
    size_t n = (size_t)(nl - start);
    if (n > 0 && start[n - 1] == '\r') n--;
    return (struct span){start, n};
}

/* "GET /path?q HTTP/1.1". Absolute-form targets ("http://host/path") are reduced to
 * their path so the router sees the same thing either way. */
static inline bool http_parse_request_line(struct span line, struct request *r) {
    const char *p = line.p, *end = line.p + line.n;
    const char *sp1 = memchr(p, ' ', line.n);
    if (!sp1 || sp1 == p || sp1 - p > 16) return false;
    for (const char *q = p; q < sp1; q++)
        if (!http_is_tchar(*q)) return false;
    r->method = (struct span){p, (size_t)(sp1 - p)};
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(end - target));
    if (!sp2 || sp2 == target) return false;
    struct span version = {sp2 + 1, (size_t)(end - sp2 - 1)};
    if (span_eq(version, "HTTP/1.0")) r->http10 = true;
    else if (!span_eq(version, "HTTP/1.1")) return false;
    for (const char *q = target; q < sp2; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f) return false;
    if (sp2 - target > 7 && strncasecmp(target, "http://", 7) == 0) {
        const char *slash = memchr(target + 7, '/', (size_t)(sp2 - target - 7));
        if (!slash) return false;
        target = slash;
    } else if (*target != '/' && !(sp2 - target == 1 && *target == '*')) {
        return false;
    }
    const char *qm = memchr(target, '?', (size_t)(sp2 - target));
    const char *path_end = qm ? qm : sp2;
    r->path = (struct span){target, (size_t)(path_end - target)};
    r->query = qm ? (struct span){qm + 1, (size_t)(sp2 - qm - 1)} : (struct span){sp2, 0};
    return true;
}

/* Does a comma-separated header value contain `token` (case-insensitively)? */
static inline bool http_has_token(struct span value, const char *token) {
    size_t tn = strlen(token);
    const char *p = value.p, *end = value.p + value.n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        const char *start = p;
        while (p < end && *p != ',') p++;
        const char *stop = p;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t')) stop--;
        if ((size_t)(stop - start) == tn && strncasecmp(start, token, tn) == 0) return true;
    }
    return false;
}

/* Read a Content-Length value; a repeated header must agree with the first. */
static inline bool http_content_length(struct span v, long *length) {
    if (v.n == 0 || v.n > 9) return false;
    long n = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return false;
        n = n * 10 + (v.p[i] - '0');
    }
    if (*length >= 0 && *length != n) return false;
    *length = n;
    return true;
}

/* One "Name: value" line. Only the headers that change framing or keep-alive matter. */
static inline bool http_parse_header(struct span line, long *length, bool *conn_close, bool *conn_keep) {
    const char *colon = memchr(line.p, ':', line.n);
    if (!colon || colon == line.p) return false; /* also rejects obsolete line folding (leading whitespace) */
    struct span name = {line.p, (size_t)(colon - line.p)};
    for (size_t i = 0; i < name.n; i++)
        if (!http_is_tchar(name.p[i])) return false;
    const char *v = colon + 1, *end = line.p + line.n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
    struct span value = {v, (size_t)(end - v)};
    if (span_ieq(name, "Content-Length")) return http_content_length(value, length);
    if (span_ieq(name, "Transfer-Encoding"))
        return false; /* no request here needs a chunked body; refusing is safest */
    if (span_ieq(name, "Connection")) {
        *conn_close |= http_has_token(value, "close");
        *conn_keep |= http_has_token(value, "keep-alive");
    }
    return true;
}

/* Parse the request at the front of buf[0..len). */
static inline enum parse_result http_parse_request(const char *buf, size_t len, struct request *r) {
    size_t head = http_head_end(buf, len);
    if (head == 0) return len >= REQUEST_HEAD_MAX ? PARSE_BAD : PARSE_MORE;
    if (head > REQUEST_HEAD_MAX) return PARSE_BAD;
    *r = (struct request){0};
    const char *pos = buf, *end = buf + head;
    if (!http_parse_request_line(http_next_line(&pos, end), r)) return PARSE_BAD;
    long length = -1;
    bool conn_close = false, conn_keep = false;
    for (;;) {
        struct span line = http_next_line(&pos, end);
        if (line.n == 0) break;
        if (!http_parse_header(line, &length, &conn_close, &conn_keep)) return PARSE_BAD;
    }
    if (length < 0) length = 0;
    if (length > REQUEST_BODY_MAX) return PARSE_BAD;
    if (len < head + (size_t)length) return PARSE_MORE;
    r->body = (struct span){buf + head, (size_t)length};
    r->length = head + (size_t)length;
    r->keep_alive = r->http10 ? conn_keep && !conn_close : !conn_close;
    return PARSE_OK;
}

#endif
