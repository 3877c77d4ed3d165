/* fuzz_replies.c — libFuzzer target: the client side of the wire protocol
 * (fa_client.c): the reply scanner, and the request encoder fed the same
 * bytes as patches.
 *
 * Input layout:
 *   byte 0      selector: bits 0-1 the depth limit (3, 8, 64, 512), bits
 *               2-3 the record cap (1, 2, 3, 8), bit 4: the last segment
 *               is appended raw (no header: an incomplete frame or a
 *               garbage header)
 *   the rest    split at NUL bytes: each segment is one reply body, framed
 *               with its length by the harness, and one patch for the
 *               encoder.
 *
 * Invariants:
 *   - fa_replies_scan returns 0 or 1 (or -1 only with ENOMEM); nrec <= cap;
 *     used <= len; nerr counts the records with an errnum; rc 1 is EPROTO
 *     with a "malformed response from the service: " sentence;
 *   - each record's spans lie inside its frame; a payload span is an
 *     object that parses within the depth limit (it sits at depth 2), an
 *     errstr span a JSON string; the flags are known ones, errnum < 4096;
 *   - a frame read without fault is valid JSON (fa_canonical with wide
 *     limits) nesting at most the depth limit (fa_json_nesting);
 *   - scanning one frame per call (cap 1, resuming at used) gives the same
 *     records, offsets shifted;
 *   - a segment the encoder accepts as a patch makes a request frame that
 *     fa_frames_scan decodes without fault, with the matchtag, id and
 *     volatile flag given and the patch, trimmed, as its value.
 */
#include <errno.h>

#include "fuzz_util.h"

#define MAXREC 64
#define W FA_REPLY_WORDS

static fa_ctx *ctx, *ctx2;

static const fa_limits wide = {.max_depth = 100000,
                               .max_key_bytes = 1u << 30,
                               .max_object_keys = 1u << 30,
                               .strict_keys = 0};

static void check_records (const char *buf, size_t len, const uint64_t *rec, size_t nrec,
                           size_t used, uint32_t depth, int rc)
{
    size_t start = 0, ne = 0;
    (void)len;
    for (size_t i = 0; i < nrec; i++) {
        const uint64_t *r = rec + i * W;
        const unsigned char *h = (const unsigned char *)buf + start;
        size_t bl = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        size_t b0 = start + 4, end = b0 + bl;
        uint64_t flags = r[0] & 0xffffffff, errnum = r[0] >> 32;
        CHECK (end <= used, "record %zu ends at %zu past used %zu", i, end, used);
        CHECK ((flags & ~(uint64_t)(FA_REPLY_ERRSTR | FA_REPLY_ERRSTR_ESC | FA_REPLY_PAYLOAD))
                   == 0,
               "unknown flags %llx", (unsigned long long)flags);
        CHECK (errnum < 4096, "errnum %llu", (unsigned long long)errnum);
        ne += errnum != 0;
        if (flags & FA_REPLY_PAYLOAD) {
            CHECK (r[4] >= b0 && r[4] + r[5] <= end && r[5] >= 2 && buf[r[4]] == '{'
                       && buf[r[4] + r[5] - 1] == '}',
                   "payload span");
            fa_limits pl = wide;
            pl.max_depth = depth - 1; /* the body counts 1 */
            CHECK (fa_canonical (ctx2, buf + r[4], r[5], &pl) == 0, "payload refused: %s",
                   fa_ctx_errmsg (ctx2));
        }
        else
            CHECK (r[4] == 0 && r[5] == 0, "a payload span without the flag");
        if (flags & FA_REPLY_ERRSTR) {
            CHECK (r[2] >= b0 && r[2] + r[3] <= end && r[3] >= 2 && buf[r[2]] == '"'
                       && buf[r[2] + r[3] - 1] == '"',
                   "errstr span");
            CHECK (fa_canonical (ctx2, buf + r[2], r[3], &wide) == 0, "errstr refused: %s",
                   fa_ctx_errmsg (ctx2));
        }
        else
            CHECK (r[2] == 0 && r[3] == 0 && !(flags & FA_REPLY_ERRSTR_ESC),
                   "an errstr span without the flag");
        CHECK (fa_canonical (ctx2, buf + b0, bl, &wide) == 0, "a read reply is not JSON: %s",
               fa_ctx_errmsg (ctx2));
        CHECK (fa_json_nesting (ctx2, buf + b0, bl, depth) == 0, "a read reply nests too deep");
        start = end;
    }
    CHECK (used == start, "used %zu != end of the last record %zu", used, start);
    (void)ne;
    (void)rc;
}

/* The encoder on one segment: what it accepts, the server's decoder reads back. */
static void check_encoder (const char *seg, size_t n, uint32_t depth)
{
    fa_limits lim = wide;
    lim.max_depth = depth;
    uint64_t id = (uint64_t)n * 0x9e3779b97f4a7c15ULL;
    fz_buf in = fz_copy (seg, n);
    size_t fi = 99;
    int r = fa_requests_encode (ctx, "job-manager.annotate", "annotations", 1234567, &id, in.p,
                                in.n, 1, n & 1 ? FA_REQ_VOLATILE : 0, &lim, 1u << 24, &fi);
    if (r < 0) {
        CHECK (fa_ctx_errnum (ctx) == EINVAL || fa_ctx_errnum (ctx) == ENOMEM
                   || fa_ctx_errnum (ctx) == EMSGSIZE,
               "encoder errnum %d", fa_ctx_errnum (ctx));
        CHECK (fi == 0, "failed index %zu", fi);
        fz_free (&in);
        return;
    }
    fz_buf out = fz_output (ctx);
    static const char topics[] = "job-manager.annotate\0";
    fa_frame_opts o = {wide, 1u << 30, 0, 0};
    o.lim.max_depth = depth;
    uint64_t rec[FA_FRAME_WORDS];
    size_t nrec = 0, used = 0;
    int rc = fa_frames_scan (ctx2, out.p, out.n, &o, topics, sizeof (topics) - 1, rec, 1, &nrec,
                             &used);
    CHECK (rc == 0 && nrec == 1 && used == out.n, "an encoded frame is refused: %s",
           fa_ctx_errmsg (ctx2));
    CHECK (rec[1] == 1234567 && rec[2] == id && ((rec[0] >> 16) & 0xffff) == 1,
           "matchtag, id or topic differ");
    CHECK (!!(rec[0] & FA_FRAME_VOLATILE) == (n & 1), "volatile differs");
    /* the value as written: the segment without the whitespace around it */
    const char *a = seg, *z = seg + n;
    while (a < z && (*a == ' ' || *a == '\t' || *a == '\n' || *a == '\r'))
        a++;
    while (z > a && (z[-1] == ' ' || z[-1] == '\t' || z[-1] == '\n' || z[-1] == '\r'))
        z--;
    if (rec[0] & FA_FRAME_HOT)
        CHECK (rec[4] == (uint64_t)(z - a) && memcmp (out.p + rec[3], a, rec[4]) == 0,
               "the value is not the patch as written");
    fz_free (&out);
    fz_free (&in);
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!ctx) {
        ctx = fa_ctx_new ();
        ctx2 = fa_ctx_new ();
        CHECK (ctx && ctx2, "fa_ctx_new failed");
    }
    uint8_t sel = data[0];
    static const uint32_t depths[4] = {3, 8, 64, 512};
    static const size_t caps[4] = {1, 2, 3, 8};
    uint32_t depth = depths[sel & 3];
    size_t cap = caps[(sel >> 2) & 3];

    const char *in = (const char *)data + 1, *end = (const char *)data + size;
    size_t room = (size_t)(end - in) * 5 + 8;
    char *buf = malloc (room);
    size_t len = 0;
    CHECK (buf != NULL, "out of memory in the harness");
    while (in <= end) {
        const char *z = memchr (in, '\0', (size_t)(end - in));
        const char *segend = z ? z : end;
        size_t n = (size_t)(segend - in);
        check_encoder (in, n, depth);
        if (!z && (sel & 0x10)) {
            memcpy (buf + len, in, n);
            len += n;
            break;
        }
        buf[len++] = (char)(n >> 24);
        buf[len++] = (char)(n >> 16);
        buf[len++] = (char)(n >> 8);
        buf[len++] = (char)n;
        memcpy (buf + len, in, n);
        len += n;
        if (!z)
            break;
        in = z + 1;
    }
    fz_buf exact = fz_copy (buf, len);
    free (buf);

    uint64_t rec[MAXREC * W];
    size_t nrec = 99, used = 99, nerr = 99;
    int rc = fa_replies_scan (ctx, exact.p, exact.n, depth, rec, cap, &nrec, &used, &nerr);
    CHECK (rc == 0 || rc == 1 || (rc == -1 && fa_ctx_errnum (ctx) == ENOMEM),
           "fa_replies_scan returned %d", rc);
    CHECK (nrec <= cap && used <= exact.n && nerr <= nrec, "nrec %zu cap %zu used %zu nerr %zu",
           nrec, cap, used, nerr);
    if (rc == 1)
        CHECK (fa_ctx_errnum (ctx) == EPROTO
                   && strncmp (fa_ctx_errmsg (ctx), "malformed response from the service: ", 37)
                          == 0,
               "a fault without EPROTO and its sentence: %d %s", fa_ctx_errnum (ctx),
               fa_ctx_errmsg (ctx));
    if (rc >= 0) {
        size_t ne = 0;
        for (size_t i = 0; i < nrec; i++)
            ne += (rec[i * W] >> 32) != 0;
        CHECK (ne == nerr, "nerr %zu, records with an errnum %zu", nerr, ne);
        check_records (exact.p, exact.n, rec, nrec, used, depth, rc);
        /* one frame per call gives the same records */
        size_t off = 0;
        for (size_t i = 0; i < nrec; i++) {
            uint64_t one[W];
            size_t n1 = 0, u1 = 0, e1 = 0;
            int r1 = fa_replies_scan (ctx, exact.p + off, exact.n - off, depth, one, 1, &n1, &u1,
                                      &e1);
            CHECK (r1 == 0 && n1 == 1, "frame %zu alone: rc %d n %zu", i, r1, n1);
            const uint64_t *r = rec + i * W;
            CHECK (one[0] == r[0] && one[1] == r[1] && one[3] == r[3] && one[5] == r[5]
                       && (!one[3] || one[2] + off == r[2]) && (!one[5] || one[4] + off == r[4]),
                   "frame %zu alone: the record differs", i);
            off += u1;
        }
    }
    fz_free (&exact);
    return 0;
}
