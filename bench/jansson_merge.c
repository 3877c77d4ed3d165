/* Anchor: the annotation path of Flux's job manager, written on jansson.
 *
 * For each line "<jobid> <patch-json>" of an ops file (bench/workload.py),
 * in order, it does what flux-core's job manager does with an ANNOTATE
 * alloc response: decode the patch with jansson, merge it recursively into
 * the job's annotations (objects recurse, other values replace), drop nulls
 * and emptied objects, and encode the job's whole annotations compactly for
 * the published event. The timed span covers those steps only (reading the
 * file is not timed).
 *
 * Usage: jansson_merge OPS_FILE
 * Prints "jansson-flux-merge ops=N seconds=S ops_per_s=R event_bytes=B
 * digest=H", H being the digest defined in bench/workload.py. Exit 1 with a
 * message on stderr if the file cannot be read or a line is not valid.
 *
 * Built by bench/anchors.py: gcc -O2 jansson_merge.c $(pkg-config --cflags
 * --libs jansson) (Debian: libjansson-dev).
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job {
    uint64_t id;   /* 0: free slot */
    json_t *ann;
};

struct ops {
    size_t n, cap;
    uint64_t *ids;
    char **patches;
};

/* Open-addressing table of jobs: cap is a power of two. */
struct jobs {
    size_t cap;
    struct job *slot;
};

static struct job *jobs_lookup (struct jobs *t, uint64_t id)
{
    size_t i = (size_t)(id * 11400714819323198485ull) & (t->cap - 1);
    while (t->slot[i].id && t->slot[i].id != id)
        i = (i + 1) & (t->cap - 1);
    return &t->slot[i];
}

/* Recursive update as the job manager does it: objects recurse, others
 * (null included) replace; nulls are dropped afterwards by clear_null. */
static void merge (json_t *orig, json_t *patch)
{
    const char *key;
    json_t *value;
    json_object_foreach (patch, key, value) {
        json_t *o = json_object_get (orig, key);
        if (json_is_object (value)) {
            if (!json_is_object (o)) {
                o = json_object ();
                json_object_set_new (orig, key, o);
            }
            merge (o, value);
        }
        else
            json_object_set (orig, key, value);
    }
}

static void clear_null (json_t *o)
{
    const char *key;
    json_t *value;
    void *tmp;
    json_object_foreach_safe (o, tmp, key, value) {
        if (json_is_object (value)) {
            clear_null (value);
            if (json_object_size (value) == 0)
                json_object_del (o, key);
        }
        else if (json_is_null (value))
            json_object_del (o, key);
    }
}

static double now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Read every line of path into ops; 0 on success, -1 with a message. */
static int read_ops (const char *path, struct ops *ops)
{
    FILE *f = fopen (path, "r");
    char *line = NULL;
    size_t len = 0;
    if (!f) {
        perror (path);
        return -1;
    }
    while (getline (&line, &len, f) > 0) {
        char *sp = strchr (line, ' ');
        if (!sp) {
            fprintf (stderr, "%s: line %zu has no space\n", path, ops->n + 1);
            goto error;
        }
        if (ops->n == ops->cap) {
            size_t cap = ops->cap ? 2 * ops->cap : 1 << 16;
            uint64_t *ids = realloc (ops->ids, cap * sizeof (*ids));
            if (ids)
                ops->ids = ids;
            char **patches = realloc (ops->patches, cap * sizeof (*patches));
            if (patches)
                ops->patches = patches;
            if (!ids || !patches)
                goto nomem;
            ops->cap = cap;
        }
        *sp = '\0';
        ops->ids[ops->n] = strtoull (line, NULL, 10);
        if (!(ops->patches[ops->n] = strdup (sp + 1)))
            goto nomem;
        ops->n++;
    }
    free (line);
    fclose (f);
    return 0;
nomem:
    fprintf (stderr, "out of memory\n");
error:
    free (line);
    fclose (f);
    return -1;
}

static int cmp_id (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The digest of bench/workload.py: jobs in id order, "<id>:" + sorted-key
 * compact JSON, 64-bit djb2. */
static uint64_t digest (struct jobs *t)
{
    uint64_t h = 5381;
    size_t n = 0;
    uint64_t *ids = malloc (t->cap * sizeof (*ids));
    if (!ids)
        return 0;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slot[i].id && t->slot[i].ann && json_object_size (t->slot[i].ann))
            ids[n++] = t->slot[i].id;
    qsort (ids, n, sizeof (*ids), cmp_id);
    for (size_t i = 0; i < n; i++) {
        char hdr[32];
        char *s = json_dumps (jobs_lookup (t, ids[i])->ann, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf (hdr, sizeof hdr, "%" PRIu64 ":", ids[i]);
        for (const char *c = hdr; *c; c++)
            h = h * 33 + (unsigned char)*c;
        for (const char *c = s; c && *c; c++)
            h = h * 33 + (unsigned char)*c;
        free (s);
    }
    free (ids);
    return h;
}

int main (int argc, char **argv)
{
    struct ops ops = {0};
    struct jobs t = {.cap = 1 << 20};
    size_t out_bytes = 0;
    if (argc != 2) {
        fprintf (stderr, "usage: jansson_merge OPS_FILE\n");
        return 1;
    }
    if (read_ops (argv[1], &ops) < 0)
        return 1;
    while (t.cap < 2 * ops.n)
        t.cap *= 2;
    if (!(t.slot = calloc (t.cap, sizeof (*t.slot)))) {
        fprintf (stderr, "out of memory\n");
        return 1;
    }
    double t0 = now ();
    for (size_t i = 0; i < ops.n; i++) {
        json_error_t err;
        json_t *p = json_loads (ops.patches[i], 0, &err);
        if (!json_is_object (p)) {
            fprintf (stderr, "line %zu: not a JSON object: %s\n", i + 1, err.text);
            return 1;
        }
        struct job *j = jobs_lookup (&t, ops.ids[i]);
        j->id = ops.ids[i];
        if (!j->ann)
            j->ann = json_object ();
        merge (j->ann, p);
        clear_null (j->ann);
        char *ev = json_dumps (j->ann, JSON_COMPACT);
        out_bytes += ev ? strlen (ev) : 0;
        free (ev);
        json_decref (p);
    }
    double dt = now () - t0;
    printf ("jansson-flux-merge ops=%zu seconds=%.3f ops_per_s=%.0f event_bytes=%zu "
            "digest=%" PRIx64 "\n",
            ops.n, dt, ops.n / dt, out_bytes, digest (&t));
    return 0;
}
