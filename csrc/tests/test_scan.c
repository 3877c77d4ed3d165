/* test_scan.c - fa_sched_scan (fa_scan.c): the estimate and queue found,
 * every other shape answered without reading past the text (inputs are
 * exact-size heap copies, so ASan catches a read past the end, and every
 * prefix of each input is scanned too). Prints "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa.h"

#include "check.h"

/* Scan an exact-size copy of s; *num / *queue get the spans found ("" if none). */
static unsigned scan (const char *s, char *num, char *queue)
{
    size_t n = strlen (s), out[4];
    char *copy = malloc (n ? n : 1);
    memcpy (copy, s, n);
    unsigned f = fa_sched_scan (copy, n, out);
    num[0] = queue[0] = '\0';
    if (f & FA_EST_NUMBER) {
        memcpy (num, copy + out[0], out[1]);
        num[out[1]] = '\0';
    }
    if (f & FA_QUEUE) {
        memcpy (queue, copy + out[2], out[3]);
        queue[out[3]] = '\0';
    }
    /* every prefix: never a crash, never a read past it */
    for (size_t k = 0; k < n; k++) {
        char *pre = malloc (k ? k : 1);
        memcpy (pre, s, k);
        (void) fa_sched_scan (pre, k, out);
        free (pre);
    }
    free (copy);
    return f;
}

int main (void)
{
    char num[256], q[256];
    CHECK (scan ("{\"sched\":{\"t_estimate\":1700000000.5}}", num, q) == FA_EST_NUMBER);
    CHECK (strcmp (num, "1700000000.5") == 0);
    CHECK (scan (" { \"user\" : {\"sched\":{\"t_estimate\":1}} , \"sched\" : { \"queue\" : \"debug\" ,"
                 " \"t_estimate\" : -12e3 } } ", num, q) == (FA_EST_NUMBER | FA_QUEUE));
    CHECK (strcmp (num, "-12e3") == 0 && strcmp (q, "debug") == 0);
    /* nested values skipped, strings with brackets and escaped quotes */
    CHECK (scan ("{\"a\":{\"b\":[1,{\"c\":\"}]\\\"\"}]},\"sched\":{\"x\":[[{}]],\"t_estimate\":5}}", num, q)
           == FA_EST_NUMBER);
    CHECK (strcmp (num, "5") == 0);
    /* not a number: a string, a bool, an object */
    CHECK (scan ("{\"sched\":{\"t_estimate\":\"soon\"}}", num, q) == FA_EST_OTHER);
    CHECK (scan ("{\"sched\":{\"t_estimate\":true}}", num, q) == FA_EST_OTHER);
    CHECK (scan ("{\"sched\":{\"t_estimate\":{\"a\":1}}}", num, q) == FA_EST_OTHER);
    CHECK (scan ("{\"sched\":{\"t_estimate\":null}}", num, q) == FA_EST_NULL);
    /* the last duplicate wins */
    CHECK (scan ("{\"sched\":{\"t_estimate\":\"x\",\"t_estimate\":7}}", num, q) == FA_EST_NUMBER);
    CHECK (scan ("{\"sched\":{\"t_estimate\":7},\"sched\":{\"queue\":\"b\"}}", num, q) == FA_QUEUE);
    /* absent */
    CHECK (scan ("{}", num, q) == 0);
    CHECK (scan ("{\"sched\":null}", num, q) == 0);
    CHECK (scan ("{\"sched\":{}}", num, q) == 0);
    CHECK (scan ("{\"user\":{\"t_estimate\":3}}", num, q) == 0);
    CHECK (scan ("{\"sched\":{\"queue\":5}}", num, q) == 0);
    /* escapes in a key or in the queue: the caller decodes */
    CHECK (scan ("{\"s\\u0063hed\":{\"t_estimate\":1}}", num, q) & FA_SCAN_SLOW);
    CHECK (scan ("{\"sched\":{\"t_\\u0065stimate\":1}}", num, q) & FA_SCAN_SLOW);
    CHECK (scan ("{\"sched\":{\"queue\":\"a\\\"b\"}}", num, q) & FA_SCAN_SLOW);
    /* not an object, or broken */
    CHECK (scan ("", num, q) == FA_SCAN_SLOW);
    CHECK (scan ("[1]", num, q) == FA_SCAN_SLOW);
    CHECK (scan ("{\"sched\":{\"t_estimate\":1}", num, q) == FA_SCAN_SLOW);
    CHECK (scan ("{\"sched\"", num, q) == FA_SCAN_SLOW);
    CHECK (scan ("{\"sched\":{\"t_estimate\":\"unterminated}}", num, q) == FA_SCAN_SLOW);
    CHECK (scan ("{\"a\":]}", num, q) == FA_SCAN_SLOW);
    {
        size_t out[4];
        CHECK (fa_sched_scan (NULL, 0, out) == FA_SCAN_SLOW);
    }
    printf ("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
