/* fuzz_frames.c — libFuzzer target: the request frame decoder (fa_frame.c).
 *
 * Input layout:
 *   byte 0      selector: bit 0 depth 8 (else 64), bit 1 a guest's length
 *               bounds (annotations 64, memo 55 bytes), bit 2 message limit
 *               64 bytes (else 1 MiB), bits 3-4 the record cap (1, 2, 3, 8),
 *               bit 5: the last segment is appended raw (no header: an
 *               incomplete frame or garbage header)
 *   the rest    split at NUL bytes: each segment is one frame body, framed
 *               with its length by the harness.
 *
 * Invariants:
 *   - return 0 or 1 (or -1 only with ENOMEM); nrec <= cap; used <= len;
 *     records end where the next begins; a fault is the last record, has
 *     EPROTO / EINVAL / EMSGSIZE and a sentence, and rc is 1;
 *   - every span of a decoded record lies inside its frame;
 *   - a decoded frame without FA_FRAME_TOOBIG is valid JSON (fa_canonical
 *     with wide limits accepts its body), its payload is an object that
 *     parses within the depth limit (payload members count 1), and a hot
 *     value parses as an object with the caller's limits;
 *   - the matchtag of a record is below 2^63;
 *   - decoding the same bytes one frame per call (cap 1, resuming at used)
 *     gives the same records, offsets shifted;
 *   - fa_reply_ok and fa_json_nesting run on every frame without fault.
 */
#include <errno.h>

#include "fuzz_util.h"

#define MAXREC 64

static fa_ctx *ctx, *ctx2;

static const fa_limits wide = {.max_depth = 100000,
                               .max_key_bytes = 1u << 30,
                               .max_object_keys = 1u << 30,
                               .strict_keys = 0};
static const char topics[] = "job-manager.annotate\0job-manager.memo\0job-manager.stats\0";

static void check_records (const char *buf, size_t len, const uint64_t *rec, size_t nrec,
                           size_t used, int rc, const fa_frame_opts *o)
{
    size_t start = 0;
    for (size_t i = 0; i < nrec; i++) {
        const uint64_t *r = rec + i * FA_FRAME_WORDS;
        int errnum = (int)(r[0] >> 32);
        size_t end = (size_t)r[11];
        if (errnum == EMSGSIZE) {
            CHECK (end == start && r[1] == 0, "EMSGSIZE record covers bytes");
            CHECK (r[2] > o->max_message, "EMSGSIZE under the limit");
        }
        else {
            CHECK (end > start + 3 && end <= len, "record end %zu out of [%zu, %zu]", end, start,
                   len);
        }
        CHECK (r[1] < (uint64_t)1 << 63, "matchtag too large");
        if (errnum) {
            CHECK (i == nrec - 1 && rc == 1, "a fault that is not the last record");
            CHECK (errnum == EPROTO || errnum == EINVAL || errnum == EMSGSIZE,
                   "unexpected errnum %d", errnum);
            CHECK (fa_ctx_errmsg (ctx)[0] != '\0', "a fault without a sentence");
            CHECK (fa_ctx_errnum (ctx) == errnum, "ctx errnum differs from the record's");
        }
        else {
            const char *body = buf + start + 4;
            size_t blen = end - start - 4;
            uint64_t flags = r[0] & 0xffff;
            CHECK (flags & FA_FRAME_MATCHTAG, "a decoded frame without a matchtag");
            CHECK (r[7] >= start + 4 && r[7] + r[8] <= end && r[8] >= 2, "payload span");
            CHECK (r[9] >= start + 4 && r[9] + r[10] <= end, "topic span");
            if ((flags & FA_FRAME_HOT) && !(flags & FA_FRAME_TOOBIG))
                CHECK (r[3] >= r[7] && r[3] + r[4] <= r[7] + r[8] && r[4] >= 2, "value span");
            if (flags & FA_FRAME_TOOBIG) /* the first oversized value, any payload member */
                CHECK (r[3] >= start + 4 && r[3] + r[4] <= end && r[4] >= 2, "TOOBIG span");
            if (!(flags & FA_FRAME_TOOBIG)) {
                CHECK (fa_canonical (ctx2, body, blen, &wide) == 0,
                       "decoded frame is not JSON: %s", fa_ctx_errmsg (ctx2));
                fa_limits pl = wide;
                pl.max_depth = o->lim.max_depth + 1; /* payload object: 1, members: 2 */
                CHECK (fa_canonical (ctx2, buf + r[7], r[8], &pl) == 0,
                       "payload beyond the limits: %s", fa_ctx_errmsg (ctx2));
                if (flags & FA_FRAME_HOT) {
                    fa_limits vl = o->lim;
                    if (flags & FA_FRAME_MEMO)
                        vl.max_depth -= 1; /* a memo sits under "user" */
                    CHECK (fa_canonical (ctx2, buf + r[3], r[4], &vl) == 0
                               && ((const char *)buf)[r[3]] == '{',
                           "hot value refused: %s", fa_ctx_errmsg (ctx2));
                }
            }
            else /* the span of the first value over its bound (memo's or not) */
                CHECK (r[4] > (o->max_memo < o->max_annotations ? o->max_memo
                                                                 : o->max_annotations),
                       "TOOBIG under the bound");
            CHECK (fa_json_nesting (ctx2, body, blen, 100000) == 0, "nesting of a frame");
            CHECK (fa_reply_ok (ctx2, r + 1, 1) == 0, "fa_reply_ok failed");
        }
        start = end;
    }
    CHECK (used == start, "used %zu != end of the last record %zu", used, start);
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
    static const size_t caps[4] = {1, 2, 3, 8};
    fa_frame_opts o = {{sel & 1 ? 8 : 64, 256, 1024, 1},
                       sel & 4 ? 64 : 1u << 20,
                       sel & 2 ? 64 : 0,
                       sel & 2 ? 55 : 0};
    size_t cap = caps[(sel >> 3) & 3];

    /* frames from the NUL-separated segments */
    const char *in = (const char *)data + 1, *end = (const char *)data + size;
    size_t room = (size_t)(end - in) * 5 + 8; /* a 4-byte header per (NUL) byte at worst */
    char *buf = malloc (room);
    size_t len = 0;
    CHECK (buf != NULL, "out of memory in the harness");
    while (in <= end) {
        const char *z = memchr (in, '\0', (size_t)(end - in));
        const char *segend = z ? z : end;
        size_t n = (size_t)(segend - in);
        if (!z && (sel & 0x20)) {
            memcpy (buf + len, in, n); /* raw tail */
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
    fz_buf exact = fz_copy (buf, len); /* exact size: ASan sees any overread */
    free (buf);

    uint64_t rec[MAXREC * FA_FRAME_WORDS];
    size_t nrec = 99, used = 99;
    int rc = fa_frames_scan (ctx, exact.p, exact.n, &o, topics, sizeof (topics) - 1, rec, cap,
                             &nrec, &used);
    CHECK (rc == 0 || rc == 1 || (rc == -1 && fa_ctx_errnum (ctx) == ENOMEM),
           "fa_frames_scan returned %d", rc);
    CHECK (nrec <= cap && used <= exact.n, "nrec %zu cap %zu used %zu len %zu", nrec, cap, used,
           exact.n);
    if (rc >= 0)
        check_records (exact.p, exact.n, rec, nrec, used, rc, &o);

    /* one frame per call gives the same records */
    if (rc >= 0) {
        uint64_t one[FA_FRAME_WORDS];
        size_t off = 0;
        for (size_t i = 0; i < nrec; i++) {
            size_t n1 = 0, u1 = 0;
            int r1 = fa_frames_scan (ctx, exact.p + off, exact.n - off, &o, topics,
                                     sizeof (topics) - 1, one, 1, &n1, &u1);
            CHECK (n1 == 1 && r1 == (rec[i * FA_FRAME_WORDS] >> 32 ? 1 : 0),
                   "frame %zu alone: rc %d n %zu", i, r1, n1);
            const uint64_t *r = rec + i * FA_FRAME_WORDS;
            CHECK (one[0] == r[0] && one[1] == r[1] && one[2] == r[2],
                   "frame %zu alone: status / matchtag / id differ", i);
            if (!(r[0] >> 32)) {
                CHECK (one[3] + off == r[3] || (one[4] == 0 && r[4] == 0), "value offset");
                CHECK (one[4] == r[4] && one[6] == r[6] && one[8] == r[8] && one[10] == r[10],
                       "frame %zu alone: span lengths differ", i);
                CHECK (one[11] + off == r[11], "frame %zu alone: end differs", i);
            }
            off += u1;
        }
    }
    fz_free (&exact);
    return 0;
}
