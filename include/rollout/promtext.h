/* promtext.h: a streaming parser for the Prometheus text exposition format 0.0.4.
 *
 * One pass over (buf, len), no NUL terminator needed, no allocation per sample. The parser
 * reports each family once (name, type, help) and each sample (metric name, label slices,
 * value, optional millisecond timestamp, line number) through callbacks. Slices point into
 * buf, or into a scratch buffer owned by the parser when a label value had to be unescaped:
 * every pointer a callback receives is valid only during that callback.
 *
 * Grammar (the Go client's, which Prometheus itself follows):
 *   # HELP <name> <text>          text escapes: \\ and \n (other backslashes kept as is)
 *   # TYPE <name> counter|gauge|histogram|summary|untyped
 *   # anything else               comment, ignored
 *   <name>[{<label>="<value>",...}] <value> [<timestamp ms>]
 * Label values escape \\, \" and \n; any other escape is an error. Values are decimal
 * floats, NaN, +Inf, -Inf (case-insensitive, as Go's ParseFloat). Blank lines, spaces and
 * tabs between tokens and a trailing "\r" are accepted.
 *
 * Families: x_bucket, x_sum and x_count belong to family x when x was declared a histogram
 * (x_sum and x_count when a summary). A sample whose name belongs to no declared family
 * starts (or continues) a family of type untyped named after it. Errors, each naming its
 * line: a second TYPE or HELP for one family, a TYPE or HELP after the family's samples or
 * apart from its other metadata lines, unknown types, bad names, unterminated label
 * values, bad escapes, duplicate labels, missing or malformed values and timestamps,
 * trailing garbage. (Stricter than the Python client, as strict as Go's parser but for
 * that one ordering rule, which lets families be reported as the text streams by.)
 *
 * Error policy: the parser never reads outside [buf, buf + len) and never aborts; malformed
 * input returns PROMTEXT_ERROR with {line, message}. Out of memory is reported the same way
 * (line 0).
 */
#ifndef ROLLOUT_PROMTEXT_H
#define ROLLOUT_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

enum promtext_type {
    PROMTEXT_UNTYPED,
    PROMTEXT_COUNTER,
    PROMTEXT_GAUGE,
    PROMTEXT_HISTOGRAM,
    PROMTEXT_SUMMARY,
};

/* A byte slice; not NUL-terminated. */
typedef struct {
    const char *ptr;
    size_t len;
} promtext_str;

typedef struct {
    promtext_str name, value;
} promtext_label;

typedef struct {
    promtext_str name;
    promtext_str help; /* unescaped; ptr NULL when the family had no HELP line */
    enum promtext_type type;
    size_t index; /* 0, 1, 2 ... in order of appearance */
} promtext_family;

typedef struct {
    const promtext_family *family;
    promtext_str name; /* the sample's own name: x_bucket for family x */
    const promtext_label *labels;
    size_t nlabels;
    double value;
    int has_timestamp;
    int64_t timestamp; /* milliseconds since the epoch, as written */
    size_t line;       /* 1-based */
} promtext_sample;

typedef struct {
    size_t line; /* 1-based; 0 for out of memory or a callback's abort */
    char message[160];
} promtext_error;

/* Callbacks return 0 to go on; any other value stops the parse, which returns it. Each
 * family is reported before its first sample (or when it ends, if it has none). */
typedef struct {
    int (*family)(void *ud, const promtext_family *f);
    int (*sample)(void *ud, const promtext_sample *s);
    void *ud;
} promtext_handler;

/* Parser state. Reusable: buffers grow to the largest input seen and are kept between
 * parses, so a scrape loop allocates nothing in steady state. Treat fields as private. */
typedef struct {
    struct promtext_fam *fams; /* families seen in this parse */
    size_t nfams, capfams;
    uint32_t *slots; /* open-addressing index of fams by name */
    size_t capslots;
    promtext_label *labels;
    size_t caplabels;
    char *scratch; /* unescaped label values of one line */
    size_t capscratch;
} promtext_parser;

#define PROMTEXT_OK 0
#define PROMTEXT_ERROR (-1)

void promtext_parser_init(promtext_parser *p);
void promtext_parser_free(promtext_parser *p);

/* Parse buf[0..len). Returns PROMTEXT_OK, PROMTEXT_ERROR (err filled), or the non-zero
 * value a callback returned. */
int promtext_parse(promtext_parser *p, const char *buf, size_t len, const promtext_handler *h, promtext_error *err);

/* "counter", "gauge", ... */
const char *promtext_type_name(enum promtext_type t);

/* Parse a Prometheus float (as a sample value or an `le` label): decimal, NaN, [+-]Inf.
 * Returns 0 and sets *out, or -1 when s[0..len) is not exactly one such number. */
int promtext_parse_double(const char *s, size_t len, double *out);

/* Registered by the host as require("rollout.promtext"); returns the module table. */
int luaopen_rollout_promtext(lua_State *L);

#endif
