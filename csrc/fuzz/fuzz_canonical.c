/* fuzz_canonical.c — libFuzzer target: the JSON parser and canonical encoder.
 *
 * The whole input is one JSON text. fa_canonical runs on it with a small
 * limit set (so depth/key limits are hit often), then the harness checks:
 *   - an error leaves an errno and a sentence;
 *   - a success is idempotent: the canonical text re-parses to itself;
 *   - larger limits accept whatever the small ones accepted, with the same
 *     output; strict keys either give the same output or EINVAL;
 *   - the output is compact: no raw byte < 0x20 anywhere (control
 *     characters inside strings must be escaped).
 * One ctx is reused across inputs on purpose: state left behind by an
 * earlier input (error, scratch, output) must never change a later result.
 */
#include <errno.h>

#include "fuzz_util.h"

static fa_ctx *ctx;

static const fa_limits small = {.max_depth = 8,
                                .max_key_bytes = 16,
                                .max_object_keys = 16,
                                .strict_keys = 0};
static const fa_limits strict = {.max_depth = 8,
                                 .max_key_bytes = 16,
                                 .max_object_keys = 16,
                                 .strict_keys = 1};
static const fa_limits large = {.max_depth = 100000,
                                .max_key_bytes = 1u << 30,
                                .max_object_keys = 1u << 30,
                                .strict_keys = 0};

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    fz_buf out, again;
    int rc;

    if (!ctx) {
        ctx = fa_ctx_new ();
        CHECK (ctx != NULL, "fa_ctx_new failed");
    }
    rc = fa_canonical (ctx, text, size, &small);
    if (rc < 0) {
        fz_check_error (ctx, "fa_canonical");
        /* Larger limits may accept it; they must not crash either. */
        if (fa_canonical (ctx, text, size, &large) < 0)
            fz_check_error (ctx, "fa_canonical (large limits)");
        return 0;
    }
    out = fz_output (ctx);
    CHECK (out.n > 0, "fa_canonical succeeded with an empty output");
    for (size_t i = 0; i < out.n; i++)
        CHECK ((unsigned char)out.p[i] >= 0x20, "raw control byte 0x%02x at %zu",
               (unsigned char)out.p[i], i);

    /* Idempotent: canonical(canonical(x)) == canonical(x). */
    rc = fa_canonical (ctx, out.p, out.n, &small);
    if (rc < 0)
        fz_dump ("canonical", out.p, out.n);
    CHECK (rc >= 0, "canonical text does not re-parse: %s", fa_ctx_errmsg (ctx));
    again = fz_output (ctx);
    if (!fz_eq (out.p, out.n, again.p, again.n)) {
        fz_dump ("input", text, size);
        fz_dump ("first", out.p, out.n);
        fz_dump ("second", again.p, again.n);
    }
    CHECK (fz_eq (out.p, out.n, again.p, again.n), "canonical text is not idempotent");
    fz_free (&again);

    /* Limits only ever reject: with larger ones the output is the same. */
    rc = fa_canonical (ctx, text, size, &large);
    CHECK (rc >= 0, "large limits reject what small ones accept: %s",
           fa_ctx_errmsg (ctx));
    again = fz_output (ctx);
    CHECK (fz_eq (out.p, out.n, again.p, again.n), "output depends on the limits");
    fz_free (&again);

    /* Strict keys: same output, or EINVAL. */
    rc = fa_canonical (ctx, text, size, &strict);
    if (rc < 0) {
        CHECK (fa_ctx_errnum (ctx) == EINVAL, "strict keys failed with errnum %d",
               fa_ctx_errnum (ctx));
    } else {
        again = fz_output (ctx);
        CHECK (fz_eq (out.p, out.n, again.p, again.n),
               "output depends on strict_keys");
        fz_free (&again);
    }
    fz_free (&out);
    return 0;
}
