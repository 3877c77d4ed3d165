/* check.h - the one assertion of the C test programs: CHECK(cond) counts a
 * pass or prints the failed condition with its place and counts a failure.
 * Each program includes it once and ends by printing "N passed, M failed"
 * (what scripts/sanitize.sh and CI read). */
#ifndef FA_TESTS_CHECK_H
#define FA_TESTS_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond)                                                                \
            passed++;                                                            \
        else {                                                                   \
            failed++;                                                            \
            fprintf (stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#endif
