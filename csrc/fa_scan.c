/* fa_scan.c - find `sched.t_estimate` and `sched.queue` in JSON text.
 *
 * The estimate history (docs/accuracy.md) needs the scheduler's estimate
 * out of every annotation it sends, on the service's hot path, without a
 * parse in Python. The texts scanned here have already been parsed (and
 * bounded) by the core's parser, so this is a plain, non-recursive walk
 * over the top-level object and the object under "sched": values are
 * skipped by counting brackets, keys compared as they are written. No
 * allocation, no global state; it never reads outside s[0..len) whatever
 * the input, and answers FA_SCAN_SLOW when the text is not what a parsed
 * object looks like or a key it cares about is written with escapes (the
 * caller then decodes the text itself).
 */
#include "fa.h"

#include <string.h>

static const char *ws (const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at an opening quote: the byte after the closing one, or NULL when the
 * string does not end before `end`. *esc is set when it holds a backslash. */
static const char *skip_string (const char *p, const char *end, int *esc)
{
    p++;
    for (;;) {
        /* memchr to the next quote: strings are most of a patch's bytes */
        const char *q = p < end ? memchr (p, '"', (size_t) (end - p)) : NULL;
        if (!q)
            return NULL;
        if (!memchr (p, '\\', (size_t) (q - p)))
            return q + 1;
        *esc = 1;
        while (p < q) { /* an escape before the quote: walk this stretch */
            if (*p == '\\')
                p++;
            p++;
        }
        if (p == q)
            return q + 1; /* the quote was not escaped */
        p = q + 1;        /* it was (the backslash right before it): go on after it */
    }
}

/* p at the first byte of a value: the byte after it, or NULL. Objects and
 * arrays by a depth count (no recursion), scalars up to a delimiter. */
static const char *skip_value (const char *p, const char *end)
{
    int esc = 0;
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string (p, end, &esc);
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = skip_string (p, end, &esc);
                if (p == NULL)
                    return NULL;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t'
           && *p != '\n' && *p != '\r')
        p++;
    return p;
}

static int key_is (const char *k, size_t n, const char *want)
{
    size_t w = strlen (want);
    return n == w && memcmp (k, want, w) == 0;
}

/* The members of the object under "sched" (p at its '{'). Returns the byte
 * after it, or NULL (malformed); fills flags and out as fa_sched_scan. */
static const char *scan_sched (const char *p, const char *end, const char *s, unsigned *flags,
                               size_t out[4])
{
    p = ws (p + 1, end);
    if (p < end && *p == '}')
        return p + 1;
    while (p < end) {
        int esc = 0;
        if (*p != '"')
            return NULL;
        const char *k = p + 1;
        p = skip_string (p, end, &esc);
        if (p == NULL)
            return NULL;
        size_t kn = (size_t) (p - 1 - k);
        p = ws (p, end);
        if (p >= end || *p != ':')
            return NULL;
        p = ws (p + 1, end);
        if (p >= end)
            return NULL;
        const char *v = p;
        p = skip_value (p, end);
        if (p == NULL)
            return NULL;
        if (esc) {
            *flags |= FA_SCAN_SLOW; /* might be either key, written with escapes */
        } else if (key_is (k, kn, "t_estimate")) {
            *flags &= ~(unsigned) (FA_EST_NUMBER | FA_EST_OTHER | FA_EST_NULL);
            if (*v == '-' || (*v >= '0' && *v <= '9')) {
                *flags |= FA_EST_NUMBER;
                out[0] = (size_t) (v - s);
                out[1] = (size_t) (p - v);
            } else if (*v == 'n') {
                *flags |= FA_EST_NULL;
            } else {
                *flags |= FA_EST_OTHER;
            }
        } else if (key_is (k, kn, "queue")) {
            *flags &= ~(unsigned) FA_QUEUE;
            if (*v == '"') {
                int qesc = 0;
                skip_string (v, p, &qesc);
                if (qesc) {
                    *flags |= FA_SCAN_SLOW;
                } else {
                    *flags |= FA_QUEUE;
                    out[2] = (size_t) (v + 1 - s);
                    out[3] = (size_t) (p - v - 2);
                }
            }
        }
        p = ws (p, end);
        if (p < end && *p == ',') {
            p = ws (p + 1, end);
            continue;
        }
        if (p < end && *p == '}')
            return p + 1;
        return NULL;
    }
    return NULL;
}

unsigned fa_sched_scan (const char *s, size_t len, size_t out[4])
{
    const char *end = s + len;
    const char *p;
    unsigned flags = 0;
    if (s == NULL || out == NULL)
        return FA_SCAN_SLOW;
    out[0] = out[1] = out[2] = out[3] = 0;
    p = ws (s, end);
    if (p >= end || *p != '{')
        return FA_SCAN_SLOW;
    p = ws (p + 1, end);
    if (p < end && *p == '}')
        return 0;
    while (p < end) {
        int esc = 0;
        if (*p != '"')
            return FA_SCAN_SLOW;
        const char *k = p + 1;
        p = skip_string (p, end, &esc);
        if (p == NULL)
            return FA_SCAN_SLOW;
        size_t kn = (size_t) (p - 1 - k);
        p = ws (p, end);
        if (p >= end || *p != ':')
            return FA_SCAN_SLOW;
        p = ws (p + 1, end);
        if (p >= end)
            return FA_SCAN_SLOW;
        if (esc) {
            flags |= FA_SCAN_SLOW;
            p = skip_value (p, end);
        } else if (key_is (k, kn, "sched")) {
            /* a later "sched" replaces an earlier one (the parser's rule) */
            flags &= ~(unsigned) (FA_EST_NUMBER | FA_EST_OTHER | FA_EST_NULL | FA_QUEUE);
            if (*p == '{')
                p = scan_sched (p, end, s, &flags, out);
            else
                p = skip_value (p, end);
        } else {
            p = skip_value (p, end);
        }
        if (p == NULL)
            return FA_SCAN_SLOW;
        p = ws (p, end);
        if (p < end && *p == ',') {
            p = ws (p + 1, end);
            continue;
        }
        if (p < end && *p == '}')
            return flags;
        return FA_SCAN_SLOW;
    }
    return FA_SCAN_SLOW;
}
