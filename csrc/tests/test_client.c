/* test_client.c - C tests of the client side of the wire protocol
 * (fa_client.c): fa_requests_encode and fa_replies_scan, their outputs
 * byte for byte, every refusal, and allocation failures (fail_after).
 * Inputs are exact-size heap copies, so a read past the end is caught
 * under AddressSanitizer. Prints "N passed, M failed". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa.h"
#include "fa_int.h"

#include "check.h"

static const fa_limits any = {512, UINT32_MAX, UINT32_MAX, 0};

static char *dup_exact (const char *s, size_t n)
{
    char *p = malloc (n ? n : 1);
    memcpy (p, s, n);
    return p;
}

/* ---- requests ---- */

/* encode with an exact-size copy of the patches (n bytes given: NULs inside) */
static int enc (fa_ctx *ctx, const char *topic, const char *member, uint64_t mt0,
                const uint64_t *ids, const char *patches, size_t len, size_t n, int flags,
                const fa_limits *lim, uint32_t max_body, size_t *failed_index)
{
    char *b = dup_exact (patches, len);
    int r = fa_requests_encode (ctx, topic, member, mt0, ids, b, len, n, flags, lim, max_body,
                                failed_index);
    free (b);
    return r;
}

/* The output is these bodies, each after its 4-byte big-endian length. */
static int frames_are (fa_ctx *ctx, const char *const *bodies, size_t n)
{
    size_t len, off = 0;
    const char *o = fa_ctx_output (ctx, &len);
    for (size_t i = 0; i < n; i++) {
        size_t bl = strlen (bodies[i]);
        const unsigned char *h = (const unsigned char *)o + off;
        if (len - off < 4 + bl
            || ((size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]) != bl
            || memcmp (o + off + 4, bodies[i], bl) != 0) {
            fprintf (stderr, "  frame %zu: %.*s\n  wanted:   %s\n", i,
                     (int)(len - off < 4 + bl ? len - off : bl), o + off + 4, bodies[i]);
            return 0;
        }
        off += 4 + bl;
    }
    return off == len;
}

static int refused (fa_ctx *ctx, int rc, int errnum, size_t failed_at, size_t got_index,
                    const char *words)
{
    size_t len;
    fa_ctx_output (ctx, &len);
    if (rc == -1 && fa_ctx_errnum (ctx) == errnum && got_index == failed_at && len == 0
        && strstr (fa_ctx_errmsg (ctx), words))
        return 1;
    fprintf (stderr, "  rc %d errnum %d index %zu output %zu: %s\n", rc, fa_ctx_errnum (ctx),
             got_index, len, fa_ctx_errmsg (ctx));
    return 0;
}

static void test_requests (void)
{
    fa_ctx *ctx = fa_ctx_new ();
    uint64_t ids[3] = {42, UINT64_MAX, 0};
    size_t fi = 99;
    const char *t = "job-manager.annotate", *m = "annotations";

    /* one patch: whitespace around it dropped, the text copied as written */
    const char *p1 = " \n{\"sched\" : {\"t\":1.50, \"a\":[1]}}\t ";
    CHECK (enc (ctx, t, m, 7, ids, p1, strlen (p1), 1, FA_REQ_VOLATILE, &any, 1 << 20, &fi)
           == 0);
    const char *b1[] = {"{\"topic\":\"job-manager.annotate\",\"matchtag\":7,\"payload\":{\"id\":42,"
                        "\"annotations\":{\"sched\" : {\"t\":1.50, \"a\":[1]}},\"volatile\":true}}"};
    CHECK (frames_are (ctx, b1, 1));

    /* three joined by NUL, memo, not volatile: matchtags count up */
    const char p3[] = "{\"a\":1}\0{}\0 {\"b\":\"\xc3\xa9\"}";
    CHECK (enc (ctx, "job-manager.memo", "memo", UINT64_MAX - 2, ids, p3, sizeof (p3) - 1, 3, 0,
                &any, 1 << 20, &fi) == 0);
    const char *b3[] = {
        "{\"topic\":\"job-manager.memo\",\"matchtag\":18446744073709551613,\"payload\":"
        "{\"id\":42,\"memo\":{\"a\":1}}}",
        "{\"topic\":\"job-manager.memo\",\"matchtag\":18446744073709551614,\"payload\":"
        "{\"id\":18446744073709551615,\"memo\":{}}}",
        "{\"topic\":\"job-manager.memo\",\"matchtag\":18446744073709551615,\"payload\":"
        "{\"id\":0,\"memo\":{\"b\":\"\xc3\xa9\"}}}"};
    CHECK (frames_are (ctx, b3, 3));

    /* the same three as one JSON array (what json writes for a list) */
    const char *pa = " [{\"a\":1}, {} ,{\"b\":\"\xc3\xa9\"}] ";
    CHECK (enc (ctx, "job-manager.memo", "memo", UINT64_MAX - 2, ids, pa, strlen (pa), 3,
                FA_REQ_ARRAY, &any, 1 << 20, &fi) == 0);
    CHECK (frames_are (ctx, b3, 3));

    /* nothing to encode */
    CHECK (enc (ctx, t, m, 1, ids, "[ ]", 3, 0, FA_REQ_ARRAY, &any, 100, &fi) == 0);
    CHECK (frames_are (ctx, NULL, 0));
    CHECK (enc (ctx, t, m, 1, ids, "", 0, 0, 0, &any, 100, &fi) == 0 && frames_are (ctx, NULL, 0));

    /* refusals: nothing in the output, the index of the patch at fault */
    const char bad1[] = "{\"a\":1}\0{\"a\":}\0{}";
    int r = enc (ctx, t, m, 1, ids, bad1, sizeof (bad1) - 1, 3, 0, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 1, fi, "invalid JSON at byte 5"));
    const char bad2[] = "{}\0{} x";
    r = enc (ctx, t, m, 1, ids, bad2, sizeof (bad2) - 1, 2, 0, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 1, fi, "trailing data"));
    const char bad3[] = "{}\0{}\0{}"; /* a NUL too many: it lands in the last patch */
    r = enc (ctx, t, m, 1, ids, bad3, sizeof (bad3) - 1, 2, 0, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 1, fi, "trailing data"));
    r = enc (ctx, t, m, 1, ids, "{}", 2, 2, 0, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 0, fi, "1 patches given, 2 expected"));
    r = enc (ctx, t, m, 1, ids, "[{},{}]", 7, 3, FA_REQ_ARRAY, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 1, fi, "fewer than 3"));
    r = enc (ctx, t, m, 1, ids, "[{},{},{}]", 10, 2, FA_REQ_ARRAY, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 1, fi, "more than 2"));
    r = enc (ctx, t, m, 1, ids, "[{}] []", 7, 1, FA_REQ_ARRAY, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 1, fi, "trailing data after the array"));
    r = enc (ctx, t, m, 1, ids, "{}", 2, 1, FA_REQ_ARRAY, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 0, fi, "not a JSON array"));
    r = enc (ctx, t, m, 1, ids, "[{}", 3, 1, FA_REQ_ARRAY, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 0, fi, "expected ',' or ']'"));
    const char nul_in_array[] = "[{}\0,{}]"; /* a NUL is no separator */
    r = enc (ctx, t, m, 1, ids, nul_in_array, sizeof (nul_in_array) - 1, 2, FA_REQ_ARRAY, &any,
             1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 0, fi, "expected ',' or ']'"));
    r = enc (ctx, t, m, 1, ids, "[]", 2, 1, FA_REQ_ARRAY, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 0, fi, "invalid JSON"));
    r = enc (ctx, t, m, 1, ids, "{\"a\":\"\xc3\"}", 9, 1, 0, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 0, fi, "UTF-8"));
    r = enc (ctx, t, m, 1, ids, "{\"a\":NaN}", 9, 1, 0, &any, 1 << 20, &fi);
    CHECK (refused (ctx, r, EINVAL, 0, fi, "invalid JSON"));
    /* deeper than the limit, however deep (no recursion past it) */
    size_t deep = 100000;
    char *d = malloc (2 * deep);
    memset (d, '[', deep);
    memset (d + deep, ']', deep);
    r = fa_requests_encode (ctx, t, m, 1, ids, d, 2 * deep, 1, 0, &any, UINT32_MAX, &fi);
    CHECK (refused (ctx, r, EINVAL, 0, fi, "nesting depth exceeds 512"));
    free (d);
    /* a frame over the message limit: with "{}" the body is 82 bytes */
    CHECK (enc (ctx, t, m, 1, ids, "{}\0{\"a\":1}", 10, 2, 0, &any, 82, &fi) == -1);
    CHECK (refused (ctx, -1, EMSGSIZE, 1, fi, "request of 105 bytes exceeds the message limit of 82"));
    CHECK (enc (ctx, t, m, 1, ids, "{}", 2, 1, 0, &any, 82, NULL) == 0); /* index may be NULL */

    /* out of memory at every allocation: nothing in the output */
    int seen = 0;
    for (long k = 1; k < 40; k++) {
        fa_ctx *c2 = fa_ctx_new ();
        c2->fail_after = k;
        r = enc (c2, t, m, 1, ids, pa, strlen (pa), 3, FA_REQ_ARRAY, &any, 1 << 20, &fi);
        c2->fail_after = 0;
        if (r < 0) {
            seen++;
            CHECK (refused (c2, r, ENOMEM, fi, fi, "out of memory"));
        }
        else
            CHECK (r == 0);
        fa_ctx_destroy (c2);
    }
    CHECK (seen > 0);
    fa_ctx_destroy (ctx);
}

/* ---- replies ---- */

/* bodies framed with their lengths, into one exact-size buffer */
static char *framed (const char *const *bodies, size_t n, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += 4 + strlen (bodies[i]);
    char *b = malloc (total ? total : 1), *o = b;
    for (size_t i = 0; i < n; i++) {
        size_t bl = strlen (bodies[i]);
        o[0] = (char)(bl >> 24);
        o[1] = (char)(bl >> 16);
        o[2] = (char)(bl >> 8);
        o[3] = (char)bl;
        memcpy (o + 4, bodies[i], bl);
        o += 4 + bl;
    }
    *len = total;
    return b;
}

static int span_is (const char *buf, uint64_t off, uint64_t len, const char *want)
{
    if (len == strlen (want) && memcmp (buf + off, want, len) == 0)
        return 1;
    fprintf (stderr, "  span: %.*s\n  wanted: %s\n", (int)len, buf + off, want);
    return 0;
}

#define W FA_REPLY_WORDS

static void test_replies (void)
{
    fa_ctx *ctx = fa_ctx_new ();
    uint64_t rec[8 * W];
    size_t nrec = 99, used = 99, nerr = 99, len;

    const char *good[] = {
        "{\"matchtag\":7,\"errnum\":0,\"payload\":{}}",
        " { \"payload\" : {\"jobs\":[{\"id\":1,\"a\":[1.5,\"x\"]}]} , \"matchtag\" : 18446744073709551615 } ",
        "{\"matchtag\":3,\"errnum\":22,\"errstr\":\"bad \\\"id\\\"\"}",
        "{\"matchtag\":0,\"errnum\":90,\"errstr\":\"too big\",\"payload\":null}",
        "{\"match\\u0074ag\":5,\"errnum\":1,\"errnum\":0,\"errstr\":null,\"extra\":[{\"deep\":{}}],"
        "\"payload\":{\"b\":2},\"payload\":{\"a\":1}}",
    };
    char *b = framed (good, 5, &len);
    CHECK (fa_replies_scan (ctx, b, len, 512, rec, 8, &nrec, &used, &nerr) == 0);
    CHECK (nrec == 5 && used == len && nerr == 2);
    CHECK (rec[0] == FA_REPLY_PAYLOAD && rec[1] == 7 && span_is (b, rec[4], rec[5], "{}"));
    CHECK (rec[W] == FA_REPLY_PAYLOAD && rec[W + 1] == UINT64_MAX
           && span_is (b, rec[W + 4], rec[W + 5], "{\"jobs\":[{\"id\":1,\"a\":[1.5,\"x\"]}]}"));
    CHECK (rec[2 * W] == ((uint64_t)22 << 32 | FA_REPLY_ERRSTR | FA_REPLY_ERRSTR_ESC)
           && rec[2 * W + 1] == 3 && span_is (b, rec[2 * W + 2], rec[2 * W + 3], "\"bad \\\"id\\\"\"")
           && rec[2 * W + 5] == 0);
    CHECK (rec[3 * W] == ((uint64_t)90 << 32 | FA_REPLY_ERRSTR) && rec[3 * W + 1] == 0
           && span_is (b, rec[3 * W + 2], rec[3 * W + 3], "\"too big\""));
    /* an escaped key is the key it spells; the last of a repeated member counts */
    CHECK (rec[4 * W] == FA_REPLY_PAYLOAD && rec[4 * W + 1] == 5 && rec[4 * W + 3] == 0
           && span_is (b, rec[4 * W + 4], rec[4 * W + 5], "{\"a\":1}"));

    /* at most cap records; an incomplete frame is left for the next call */
    CHECK (fa_replies_scan (ctx, b, len, 512, rec, 2, &nrec, &used, &nerr) == 0);
    CHECK (nrec == 2 && used == 4 + strlen (good[0]) + 4 + strlen (good[1]) && nerr == 0);
    CHECK (fa_replies_scan (ctx, b, len - 1, 512, rec, 8, &nrec, &used, &nerr) == 0);
    CHECK (nrec == 4 && used == len - 4 - strlen (good[4]) && nerr == 2);
    CHECK (fa_replies_scan (ctx, b, 3, 512, rec, 8, &nrec, &used, &nerr) == 0 && nrec == 0
           && used == 0);
    free (b);

    /* malformed replies: EPROTO, the records before it kept, used at it */
    static const struct {
        const char *body, *words;
    } bad[] = {
        {"[1,2]", "not a JSON object"},
        {"{matchtag", "invalid JSON"},
        {"", "unexpected end of input"},
        {"{\"errnum\":0,\"payload\":{}}", "'matchtag' is missing"},
        {"{\"matchtag\":-1}", "'matchtag' is not a non-negative integer"},
        {"{\"matchtag\":1.0}", "'matchtag' is not"},
        {"{\"matchtag\":18446744073709551616}", "'matchtag' is not"},
        {"{\"matchtag\":1,\"errnum\":\"22\"}", "'errnum' is not an integer from 0 to 4095"},
        {"{\"matchtag\":1,\"errnum\":4096}", "'errnum' is not"},
        {"{\"matchtag\":1,\"errnum\":22,\"errstr\":7}", "'errstr' is not a string"},
        {"{\"matchtag\":1,\"payload\":[1]}", "'payload' is not an object"},
        {"{\"matchtag\":1,\"payload\":{\"a\":\"caf\xe9\"}}", "UTF-8"},
        {"{\"matchtag\":1,\"errstr\":\"\\ud800\"}", "surrogate"},
        {"{\"matchtag\":1,\"payload\":{}} x", "trailing data"},
        {"{\"matchtag\":1,\"payload\":{}", "unexpected end of input"},
        {"{\"matchtag\":1 \"payload\":{}}", "expected ',' or '}'"},
        {"{\"matchtag\" 1}", "expected ':'"},
        {"{\"matchtag\":1,\"x\":NaN}", "invalid JSON"},
        {"{\"matchtag\":1,\"x\":1e400}", "out of range"},
    };
    for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++) {
        const char *two[2] = {good[0], bad[i].body};
        b = framed (two, 2, &len);
        int r = fa_replies_scan (ctx, b, len, 512, rec, 8, &nrec, &used, &nerr);
        int ok = r == 1 && nrec == 1 && used == 4 + strlen (good[0]) && nerr == 0
                 && fa_ctx_errnum (ctx) == EPROTO
                 && strncmp (fa_ctx_errmsg (ctx), "malformed response from the service: ", 37) == 0
                 && strstr (fa_ctx_errmsg (ctx), bad[i].words);
        if (!ok)
            fprintf (stderr, "  bad reply %zu: rc %d nrec %zu: %s\n", i, r, nrec,
                     fa_ctx_errmsg (ctx));
        CHECK (ok);
        free (b);
    }

    /* nesting: the body counts 1, so a payload holds max_depth - 1 levels */
    const char *d3[] = {"{\"matchtag\":1,\"payload\":{\"a\":[]}}"};
    b = framed (d3, 1, &len);
    CHECK (fa_replies_scan (ctx, b, len, 3, rec, 8, &nrec, &used, &nerr) == 0 && nrec == 1);
    CHECK (fa_replies_scan (ctx, b, len, 2, rec, 8, &nrec, &used, &nerr) == 1
           && strstr (fa_ctx_errmsg (ctx), "nesting depth exceeds 2"));
    free (b);
    size_t deep = 100000;
    size_t bl = 29 + 2 * deep + 2;
    char *d = malloc (4 + bl);
    memcpy (d + 4, "{\"matchtag\":1,\"payload\":{\"a\":", 29);
    memset (d + 33, '[', deep);
    memset (d + 33 + deep, ']', deep);
    memcpy (d + 33 + 2 * deep, "}}", 2);
    d[0] = (char)(bl >> 24), d[1] = (char)(bl >> 16), d[2] = (char)(bl >> 8), d[3] = (char)bl;
    CHECK (fa_replies_scan (ctx, d, 4 + bl, 512, rec, 8, &nrec, &used, &nerr) == 1
           && nrec == 0 && used == 0 && strstr (fa_ctx_errmsg (ctx), "nesting depth exceeds 512"));
    free (d);

    /* a big reply's scratch is given back afterwards */
    size_t nel = 300000;
    char *big = malloc (40 + 4 * nel);
    size_t o = 4;
    o += (size_t)sprintf (big + o, "{\"matchtag\":1,\"payload\":{\"a\":[");
    for (size_t i = 0; i < nel; i++)
        o += (size_t)sprintf (big + o, i ? ",10" : "10");
    o += (size_t)sprintf (big + o, "]}}");
    bl = o - 4;
    big[0] = (char)(bl >> 24), big[1] = (char)(bl >> 16), big[2] = (char)(bl >> 8),
    big[3] = (char)bl;
    CHECK (fa_replies_scan (ctx, big, o, 512, rec, 8, &nrec, &used, &nerr) == 0 && nrec == 1
           && rec[5] == bl - 25);
    CHECK (ctx->ts.cap <= ((size_t)1 << 20));
    free (big);

    /* out of memory at every allocation */
    const char *one[] = {good[1]};
    b = framed (one, 1, &len);
    int seen = 0;
    for (long k = 1; k < 40; k++) {
        fa_ctx *c2 = fa_ctx_new ();
        c2->fail_after = k;
        int r = fa_replies_scan (c2, b, len, 512, rec, 8, &nrec, &used, &nerr);
        c2->fail_after = 0;
        if (r < 0) {
            seen++;
            CHECK (fa_ctx_errnum (c2) == ENOMEM && nrec == 0 && used == 0);
        }
        else
            CHECK (r == 0 && nrec == 1 && used == len);
        fa_ctx_destroy (c2);
    }
    CHECK (seen > 0);
    free (b);
    fa_ctx_destroy (ctx);
}

int main (void)
{
    test_requests ();
    test_replies ();
    printf ("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
