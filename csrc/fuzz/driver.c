/* driver.c — a small standalone fuzz driver, for machines without clang.
 *
 * Links with a target's LLVMFuzzerTestOneInput (built with gcc
 * -fsanitize=address,undefined). It is a blind mutator, not a coverage-
 * guided fuzzer: it loads the seed files, runs each once, then for the
 * given time picks a seed, mutates it (bit flips, byte inserts/deletes,
 * chunk copies, splices with another seed, deep nesting, NUL separators,
 * edge numbers and escapes) and runs the result. The random sequence is
 * deterministic for a given -s seed and seed set.
 *
 * On a crash (sanitizer report, abort from a harness invariant, signal)
 * the input being run is written to <prefix>crash-<exec number> before the
 * process dies, like libFuzzer's artifacts.
 *
 *   driver [-t SECONDS] [-s SEED] [-m MAXLEN] [-a PREFIX] DIR|FILE...
 *   -t 0 replays the given files/dirs once and exits (reproducing a crash).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
/* Provided by the sanitizer runtime; weak so a plain build links too. */
void __sanitizer_set_death_callback (void (*cb) (void)) __attribute__ ((weak));

typedef struct {
    uint8_t *p;
    size_t n;
} input;

static input *seeds;
static size_t nseeds, capseeds;
static size_t maxlen = 16384;
static uint64_t rng = 0x243F6A8885A308D3ull;

/* What is running now, for the crash handlers. */
static const uint8_t *volatile cur_p;
static volatile size_t cur_n;
static volatile unsigned long long cur_exec;
static const char *prefix = "./";
static volatile sig_atomic_t saved;

static uint64_t rnd (void)
{
    /* xorshift64*: deterministic, good enough to pick mutations. */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static size_t below (size_t n)
{
    return n ? (size_t)(rnd () % n) : 0;
}

/* Async-signal-safe: only open/write/close and fixed buffers. */
static void save_crash (void)
{
    char path[4096], num[32];
    size_t pl = strlen (prefix), k = 0;
    unsigned long long e = cur_exec;
    int fd;

    if (saved || !cur_p)
        return;
    saved = 1;
    do {
        num[k++] = (char)('0' + e % 10);
        e /= 10;
    } while (e && k < sizeof num);
    if (pl + 6 + k + 1 > sizeof path)
        return;
    memcpy (path, prefix, pl);
    memcpy (path + pl, "crash-", 6);
    for (size_t i = 0; i < k; i++)
        path[pl + 6 + i] = num[k - 1 - i];
    path[pl + 6 + k] = '\0';
    fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        const uint8_t *p = cur_p;
        size_t left = cur_n;
        while (left > 0) {
            ssize_t w = write (fd, p, left);
            if (w <= 0)
                break;
            p += w;
            left -= (size_t)w;
        }
        close (fd);
        static const char msg[] = "driver: crashing input saved to ";
        (void)!write (2, msg, sizeof msg - 1);
        (void)!write (2, path, strlen (path));
        (void)!write (2, "\n", 1);
    }
}

static void on_signal (int sig)
{
    save_crash ();
    signal (sig, SIG_DFL);
    raise (sig);
}

static void add_seed (const uint8_t *p, size_t n)
{
    if (n > maxlen)
        n = maxlen;
    if (nseeds == capseeds) {
        capseeds = capseeds ? capseeds * 2 : 256;
        seeds = realloc (seeds, capseeds * sizeof *seeds);
        if (!seeds) {
            perror ("realloc");
            exit (2);
        }
    }
    seeds[nseeds].p = malloc (n ? n : 1);
    if (!seeds[nseeds].p) {
        perror ("malloc");
        exit (2);
    }
    if (n)
        memcpy (seeds[nseeds].p, p, n);
    seeds[nseeds].n = n;
    nseeds++;
}

static void load_file (const char *path)
{
    FILE *f = fopen (path, "rb");
    uint8_t *buf;
    long n;

    if (!f || fseek (f, 0, SEEK_END) != 0 || (n = ftell (f)) < 0) {
        fprintf (stderr, "driver: cannot read %s: %s\n", path, strerror (errno));
        exit (2);
    }
    rewind (f);
    buf = malloc ((size_t)n + 1);
    if (!buf || fread (buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf (stderr, "driver: cannot read %s\n", path);
        exit (2);
    }
    fclose (f);
    add_seed (buf, (size_t)n);
    free (buf);
}

static int cmp_names (const void *a, const void *b)
{
    return strcmp (*(char *const *)a, *(char *const *)b);
}

/* Files of a directory in name order, so the run is reproducible. */
static void load_path (const char *path)
{
    struct stat st;
    if (stat (path, &st) != 0) {
        fprintf (stderr, "driver: %s: %s\n", path, strerror (errno));
        exit (2);
    }
    if (!S_ISDIR (st.st_mode)) {
        load_file (path);
        return;
    }
    DIR *d = opendir (path);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    while (d && (de = readdir (d))) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc (names, cap * sizeof *names);
        }
        names[n] = malloc (strlen (path) + strlen (de->d_name) + 2);
        sprintf (names[n], "%s/%s", path, de->d_name);
        n++;
    }
    if (d)
        closedir (d);
    qsort (names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        if (stat (names[i], &st) == 0 && S_ISREG (st.st_mode))
            load_file (names[i]);
        free (names[i]);
    }
    free (names);
}

/* --- mutations on a buffer of capacity maxlen ----------------------- */

static const char *const tokens[] = {
    "{",     "}",    "[",     "]",     "\"",    ":",     ",",     "null",
    "true",  "false", "0",    "-0",    "-0.0",  "1e400", "5e-324", "1e308",
    "9223372036854775807",  "9223372036854775808", "-9223372036854775808",
    "-9223372036854775809", "18446744073709551616", "0.1", "2.2250738585072014e-308",
    "\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\\"", "\\\\", "\\n",
    "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "\xff", "\xe2\x82",
    "\xc3\xa9", "\xf0\x9f\x98\x80", "{\"a\":", "{\"sched\":", "{\"user\":",
    "\"a.b\"", "\"\"", " ", "\t", "\n",
};

static size_t insert (uint8_t *b, size_t n, size_t at, const uint8_t *src, size_t k)
{
    if (n + k > maxlen)
        k = maxlen - n;
    memmove (b + at + k, b + at, n - at);
    memcpy (b + at, src, k);
    return n + k;
}

static size_t mutate (uint8_t *b, size_t n)
{
    size_t at = below (n + 1);
    switch (below (10)) {
    case 0: /* bit flip */
        if (n)
            b[below (n)] ^= (uint8_t)(1u << below (8));
        return n;
    case 1: /* random byte(s) */
        for (size_t k = 1 + below (4); k && n; k--)
            b[below (n)] = (uint8_t)rnd ();
        return n;
    case 2: { /* delete a range */
        if (!n)
            return n;
        at = below (n);
        size_t k = 1 + below (n - at < 16 ? n - at : 16);
        memmove (b + at, b + at + k, n - at - k);
        return n - k;
    }
    case 3: { /* copy a chunk of itself elsewhere */
        if (!n)
            return n;
        size_t from = below (n), k = 1 + below (n - from < 64 ? n - from : 64);
        uint8_t tmp[64];
        memcpy (tmp, b + from, k);
        return insert (b, n, at, tmp, k);
    }
    case 4: { /* splice a chunk of another seed */
        const input *s = &seeds[below (nseeds)];
        if (!s->n)
            return n;
        size_t from = below (s->n), k = 1 + below (s->n - from);
        return insert (b, n, at, s->p + from, k);
    }
    case 5: { /* deep nesting: N openers here, maybe N closers at the end */
        static const char *const open[] = {"[", "{\"a\":", "{\"k\":["};
        static const char *const close[] = {"]", "}", "]}"};
        size_t kind = below (3), depth = 1 + below (below (2) ? 40 : 3000);
        size_t ol = strlen (open[kind]), cl = strlen (close[kind]);
        size_t closers = below (2);
        if (depth * ol > maxlen - n)
            depth = (maxlen - n) / ol;
        uint8_t *tmp = malloc (depth * (ol > cl ? ol : cl) + 1);
        if (!tmp)
            return n;
        for (size_t i = 0; i < depth; i++)
            memcpy (tmp + i * ol, open[kind], ol);
        n = insert (b, n, at, tmp, depth * ol); /* one memmove, not depth */
        if (closers) {
            for (size_t i = 0; i < depth; i++)
                memcpy (tmp + i * cl, close[kind], cl);
            n = insert (b, n, n, tmp, depth * cl);
        }
        free (tmp);
        return n;
    }
    case 6: { /* NUL: a segment separator for the merge target */
        uint8_t z = 0;
        return insert (b, n, at, &z, 1);
    }
    case 7:
    case 8: { /* a JSON token or an edge value */
        const char *t = tokens[below (sizeof tokens / sizeof *tokens)];
        return insert (b, n, at, (const uint8_t *)t, strlen (t));
    }
    default: { /* duplicate the whole input (many keys, long strings) */
        uint8_t *tmp = malloc (n ? n : 1);
        memcpy (tmp, b, n);
        n = insert (b, n, at, tmp, n);
        free (tmp);
        return n;
    }
    }
}

static void run_one (const uint8_t *p, size_t n)
{
    cur_p = p;
    cur_n = n;
    LLVMFuzzerTestOneInput (p, n);
    cur_exec++;
}

int main (int argc, char **argv)
{
    double seconds = 60;
    int opt;

    while ((opt = getopt (argc, argv, "t:s:m:a:")) != -1) {
        switch (opt) {
        case 't':
            seconds = atof (optarg);
            break;
        case 's':
            rng = strtoull (optarg, NULL, 0) * 0x9E3779B97F4A7C15ull + 1;
            break;
        case 'm':
            maxlen = strtoull (optarg, NULL, 0);
            break;
        case 'a':
            prefix = optarg;
            break;
        default:
            fprintf (stderr, "usage: %s [-t SECONDS] [-s SEED] [-m MAXLEN] "
                             "[-a PREFIX] DIR|FILE...\n", argv[0]);
            return 2;
        }
    }
    for (int i = optind; i < argc; i++)
        load_path (argv[i]);
    if (nseeds == 0)
        add_seed ((const uint8_t *)"{}", 2);

    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback (save_crash);
    signal (SIGABRT, on_signal);
    signal (SIGSEGV, on_signal);
    signal (SIGBUS, on_signal);
    signal (SIGFPE, on_signal);
    signal (SIGILL, on_signal);

    struct timespec t0, t1;
    clock_gettime (CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < nseeds; i++)
        run_one (seeds[i].p, seeds[i].n);

    uint8_t *buf = malloc (maxlen + 1);
    double elapsed = 0;
    if (!buf)
        return 2;
    while (seconds > 0) {
        const input *s = &seeds[below (nseeds)];
        size_t n = s->n;
        memcpy (buf, s->p, n);
        for (size_t k = 1 + below (4); k; k--)
            n = mutate (buf, n);
        run_one (buf, n);
        if ((cur_exec & 63) == 0) {
            clock_gettime (CLOCK_MONOTONIC, &t1);
            elapsed = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
            if (elapsed >= seconds)
                break;
        }
    }
    clock_gettime (CLOCK_MONOTONIC, &t1);
    elapsed = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf ("driver: %llu execs in %.1f s (%.0f exec/s), %zu seeds, no crash\n",
            (unsigned long long)cur_exec, elapsed,
            elapsed > 0 ? (double)cur_exec / elapsed : 0.0, nseeds);
    free (buf);
    for (size_t i = 0; i < nseeds; i++)
        free (seeds[i].p);
    free (seeds);
    return 0;
}
