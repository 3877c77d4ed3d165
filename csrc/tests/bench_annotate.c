/* bench_annotate.c - a driver for instruction counts (not a test): reads
 * a workload file ("<id> <patch>" per line, bench/anchors.py write_ops or
 * bench/workload.py), applies every line with
 * fa_table_annotate (or fa_table_apply_many with -m), then, with -e,
 * re-annotates every job once more with tracking on and runs
 * fa_table_batch_encode (-d: delta). Run it under callgrind:
 *   cc -O2 -g -D_GNU_SOURCE -Icsrc csrc/tests/bench_annotate.c csrc/fa_*.c -o /tmp/ba -lm
 *   valgrind --tool=callgrind /tmp/ba ops.txt
 * and divide Ir by the number of ops it prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa.h"

int main (int argc, char **argv)
{
    int many = 0, enc = 0, delta = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "-m") == 0)
            many = 1;
        else if (strcmp (argv[i], "-e") == 0)
            enc = 1;
        else if (strcmp (argv[i], "-d") == 0)
            enc = delta = 1;
        else
            path = argv[i];
    }
    if (!path) {
        fprintf (stderr, "usage: bench_annotate [-m] [-e|-d] OPS-FILE\n");
        return 2;
    }
    FILE *f = fopen (path, "rb");
    if (!f) {
        perror (path);
        return 1;
    }
    size_t cap = 1 << 20, len = 0, nops = 0, opcap = 1024;
    char *buf = malloc (cap), line[65536];
    uint64_t *ids = malloc (opcap * sizeof (*ids));
    size_t *offs = malloc ((opcap + 1) * sizeof (*offs));
    offs[0] = 0;
    while (fgets (line, sizeof (line), f)) {
        char *sp = strchr (line, ' ');
        if (!sp)
            continue;
        size_t pl = strlen (sp + 1);
        if (pl && sp[pl] == '\n')
            pl--;
        if (nops == opcap) {
            opcap *= 2;
            ids = realloc (ids, opcap * sizeof (*ids));
            offs = realloc (offs, (opcap + 1) * sizeof (*offs));
        }
        while (len + pl > cap)
            buf = realloc (buf, cap *= 2);
        ids[nops] = strtoull (line, NULL, 10);
        memcpy (buf + len, sp + 1, pl);
        len += pl;
        offs[++nops] = len;
    }
    fclose (f);
    fa_table *t = fa_table_new ();
    size_t changed = 0;
    if (many) {
        fa_limits lim = {64, 256, 1024, 1};
        if (fa_table_apply_many (t, ids, buf, offs, nops, &lim, &changed, NULL) < 0) {
            fprintf (stderr, "error: %s\n", fa_ctx_errmsg (fa_table_ctx (t)));
            return 1;
        }
    }
    else {
        for (size_t i = 0; i < nops; i++) {
            int r = fa_table_annotate (t, ids[i], buf + offs[i], offs[i + 1] - offs[i]);
            if (r < 0) {
                fprintf (stderr, "op %zu: %s\n", i, fa_ctx_errmsg (fa_table_ctx (t)));
                return 1;
            }
            changed += (size_t)r;
        }
    }
    printf ("%zu ops, %zu changed, %zu jobs, %zu bytes\n", nops, changed,
            fa_table_count (t), fa_table_memory (t));
    if (enc) {
        size_t nj = fa_table_count (t), n;
        uint64_t *all = malloc (nj * sizeof (*all));
        fa_table_ids (t, all, nj);
        fa_table_track (t, 1);
        for (size_t i = 0; i < nj; i++) {
            char p[128];
            int pl = snprintf (p, sizeof (p), "{\"sched\":{\"jobs_ahead\":%zu}}", i + 7);
            fa_table_annotate (t, all[i], p, (size_t)pl);
        }
        for (int k = 0; k < 10; k++)
            fa_table_batch_encode (t, NULL, "", 0, 0, delta);
        fa_ctx_output (fa_table_ctx (t), &n);
        printf ("batch: %zu entries x 10 encodes, %zu bytes\n", nj, n);
        free (all);
    }
    fa_table_destroy (t);
    free (buf);
    free (ids);
    free (offs);
    return 0;
}
