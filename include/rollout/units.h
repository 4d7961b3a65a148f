/* units.h: parsing of the units playbooks are written in: durations ("250ms", "1h30m"),
 * ratios ("1%", "0.02"), byte sizes ("2Gi") and conditions ("error_rate > 5%").
 * Pure functions over (pointer, length): no allocation, no locale, safe on any bytes. */
#ifndef ROLLOUT_UNITS_H
#define ROLLOUT_UNITS_H

#include <stddef.h>

#include <lua.h>

/* Each returns 0 and sets *out, or -1 and writes a reason into err. */
int units_duration(const char *s, size_t n, double *out, char *err, size_t errlen);
int units_ratio(const char *s, size_t n, double *out, char *err, size_t errlen);
int units_bytes(const char *s, size_t n, double *out, char *err, size_t errlen);

/* A value with its unit kind: duration (seconds), ratio, bytes or a plain number. */
enum unit_kind { UNIT_NUMBER, UNIT_DURATION, UNIT_RATIO, UNIT_BYTES };
int units_value(const char *s, size_t n, double *out, int *kind, char *err, size_t errlen);

typedef struct {
    const char *signal; /* points into the input */
    size_t signal_len;
    char op[3]; /* ">", ">=", "<", "<=", "==", "!=" */
    double value;
    int kind; /* enum unit_kind of the value */
} units_condition;

/* "latency_p99 > 1s" */
int units_parse_condition(const char *s, size_t n, units_condition *c, char *err, size_t errlen);

int luaopen_rollout_units(lua_State *L);

#endif
