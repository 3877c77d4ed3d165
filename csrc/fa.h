/* fa.h - the one public header of the flux-annot C core.
 *
 * Data flow: a patch (JSON text, not NUL-terminated) is parsed by fa_json.c
 * into a small arena tree where only objects are nodes and every other
 * value is its canonical text; fa_merge.c walks a stored canonical text and
 * that tree together and writes the new canonical text; fa_table.c keeps one
 * canonical text per job id in an open-addressing hash and records batch
 * pre-images; fa_ctx.c owns every allocation, the scratch arena, the output
 * buffer and the last error.
 *
 * Conventions: fallible calls return -1 (or NULL) and leave an errno value
 * and a sentence in their fa_ctx (fa_ctx_errnum / fa_ctx_errmsg); on failure
 * the target is unchanged. Input buffers are (pointer, length) pairs and
 * are never read past their length. No call keeps a pointer to its inputs.
 * A ctx or table is not thread-safe; distinct ones are independent (no
 * global mutable state).
 */
#ifndef FA_H
#define FA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fa_ctx fa_ctx;     /* opaque: scratch + output + last error */
typedef struct fa_table fa_table; /* opaque: the job table (owns one fa_ctx) */

/* Limits enforced while parsing a patch (and, for max_object_keys, on each
 * object of a merge result). Any max_depth above FA_DEPTH_CAP is treated as
 * FA_DEPTH_CAP: the parser recurses at most that deep. */
typedef struct fa_limits {
    uint32_t max_depth;       /* annotations object counts 1 */
    uint32_t max_key_bytes;   /* decoded UTF-8 bytes of one key */
    uint32_t max_object_keys; /* distinct keys of one object */
    uint32_t strict_keys;     /* 1: keys non-empty and without '.' */
} fa_limits;

#define FA_DEPTH_CAP 4096

typedef struct fa_info {           /* filled by fa_table_apply */
    int changed;                   /* 1 if the job's text differs from before */
    size_t old_len, new_len;       /* canonical text bytes; 0 = no annotations */
    size_t old_ns_len, new_ns_len; /* bytes of the value under `ns` (0 = absent) */
} fa_info;

#define FA_REPLACE 1 /* merge into an empty tree instead of the stored one */
#define FA_DRYRUN 2  /* compute and stage the result; install with fa_table_commit */

/* ---- contexts (fa_ctx.c) ---- */

/* A new context (scratch arena, output buffer, last error); NULL if out of
 * memory. Free it with fa_ctx_destroy. */
fa_ctx *fa_ctx_new (void);
/* Free a context and everything it holds; accepts NULL. */
void fa_ctx_destroy (fa_ctx *ctx);
/* errno value of the last failed call on ctx (0 if none failed yet). */
int fa_ctx_errnum (const fa_ctx *ctx);
/* NUL-terminated sentence describing the last error; owned by ctx. */
const char *fa_ctx_errmsg (const fa_ctx *ctx);
/* The last output text (not NUL-terminated), its length in *len; owned by
 * ctx and valid until the next call on ctx (or its table). */
const char *fa_ctx_output (const fa_ctx *ctx, size_t *len);

/* ---- pure functions (fa_json.c, fa_merge.c); output in fa_ctx_output ---- */

/* Any JSON value -> its canonical compact text (nulls and empty objects
 * kept; duplicate keys: last wins at the first one's place). lim applies
 * (strict_keys usually 0). Returns 0, or -1: EINVAL (syntax, limits,
 * number out of range, bad UTF-8), ENOMEM. */
int fa_canonical (fa_ctx *ctx, const char *text, size_t len, const fa_limits *lim);

/* Merge (docs/data-model.md) of patch (must be an object) into tree (an object text, or
 * tlen 0 = none). The tree is parsed with lim and taken as the data model
 * says: nulls and empty objects in it are pruned. Returns 1 (non-empty
 * result in output), 0 (nothing left, output empty), -1 (EINVAL, ENOMEM). */
int fa_merge (fa_ctx *ctx, const char *tree, size_t tlen, const char *patch, size_t plen,
              const fa_limits *lim);

/* The merge patch turning old into new (canonical object texts, as produced
 * by the core; either may have length 0 = none). Returns 1 (patch in
 * output), 0 (equal, output empty), -1 (EINVAL if a text is not a JSON
 * object, ENOMEM). */
int fa_diff (fa_ctx *ctx, const char *old, size_t olen, const char *new_, size_t nlen);

/* ---- the job table (fa_table.c) ---- */

/* A new, empty table; NULL if out of memory. */
fa_table *fa_table_new (void);
/* Free a table and all it holds; accepts NULL. */
void fa_table_destroy (fa_table *t);
/* The table's own ctx (borrowed): errors and output of table calls. */
fa_ctx *fa_table_ctx (fa_table *t);
/* Number of jobs with annotations. */
size_t fa_table_count (const fa_table *t);
/* Every byte the table holds: structs, slot array, texts, batch records,
 * scratch (each allocation's usable size + malloc's 8-byte header). */
size_t fa_table_memory (const fa_table *t);

/* Merge patch into job id (a job without annotations starts empty).
 * lim applies to the patch and to the result's object sizes; ns (nslen
 * bytes, may be NULL) names a top-level key whose value sizes are reported
 * in info (may be NULL). flags: FA_REPLACE, FA_DRYRUN (nothing installed:
 * the result is staged until fa_table_commit or the next table call).
 * Returns 1 changed, 0 unchanged, -1 (EINVAL, ENOMEM; nothing changed). */
int fa_table_apply (fa_table *t, uint64_t id, const char *patch, size_t len,
                    const fa_limits *lim, const char *ns, size_t nslen, int flags,
                    fa_info *info);
/* The hot path of JobTable.annotate: fa_table_apply with the table's
 * default limits (fa_table_set_limits; owner limits at creation), no ns,
 * no flags, no info. Returns 1 changed, 0 unchanged, -1. */
int fa_table_annotate (fa_table *t, uint64_t id, const char *patch, size_t len);
/* Set the default limits used by fa_table_annotate (copied). */
void fa_table_set_limits (fa_table *t, const fa_limits *lim);
/* Install the result staged by the last FA_DRYRUN apply. 0, or -1: EINVAL
 * "nothing staged" (none, or another call came between), ENOMEM. */
int fa_table_commit (fa_table *t);
/* Apply patch i = buf[offsets[i] .. offsets[i+1]) to ids[i] for i < n, in
 * order (offsets has n+1 entries). *nchanged counts changed jobs. Stops at
 * the first bad patch: *failed_index = i, returns -1 (patches before i stay
 * applied). 0 on success. nchanged / failed_index may be NULL. */
int fa_table_apply_many (fa_table *t, const uint64_t *ids, const char *buf,
                         const size_t *offsets, size_t n, const fa_limits *lim,
                         size_t *nchanged, size_t *failed_index);
/* One patch of fa_table_apply_spans: n bytes at p (borrowed). */
typedef struct fa_span {
    const char *p;
    size_t n;
} fa_span;
/* fa_table_apply_many with each patch given as its own span (a caller
 * holding the patches as separate buffers, like annotate_many's list of
 * bytes, neither copies nor joins them). Otherwise as apply_many: in
 * order, stops at the first bad patch (*failed_index = i, -1; earlier
 * ones stay applied), 0 on success; nchanged / failed_index may be NULL. */
int fa_table_apply_spans (fa_table *t, const uint64_t *ids, const fa_span *spans, size_t n,
                          const fa_limits *lim, size_t *nchanged, size_t *failed_index);
/* The stored canonical text of id: borrowed pointer, valid until the next
 * change of the table. 1 found, 0 none (*text NULL, *len 0). */
int fa_table_get (fa_table *t, uint64_t id, const char **text, size_t *len);
/* The job's tree keeping only (exclude=0) or dropping (exclude=1) the
 * top-level namespaces in ns_list ("a\0b\0", ns_len bytes). Output in the
 * table's ctx. 1 (non-empty view), 0 (none or empty view), -1 ENOMEM. */
int fa_table_get_view (fa_table *t, uint64_t id, const char *ns_list, size_t ns_len,
                       int exclude);
/* Remove a job's annotations. 1 removed, 0 absent, -1 ENOMEM (tracking). */
int fa_table_remove (fa_table *t, uint64_t id);
/* Copy up to cap ids (table order) to ids; returns the total count. */
size_t fa_table_ids (fa_table *t, uint64_t *ids, size_t cap);

/* Change tracking for batches (docs/events.md): while tracking is on, the first
 * change of a job records its pre-image (its text before the change). */
void fa_table_track (fa_table *t, int on);
/* Jobs touched since the last clear (an upper bound of batch_ids). */
size_t fa_table_batch_count (const fa_table *t);
/* Net-changed ids (pre-image != current), first-touch order: copies up to
 * cap, returns the total. */
size_t fa_table_batch_ids (fa_table *t, uint64_t *ids, size_t cap);
/* "[[id,tree|null],...]" for the net-changed jobs in batch_ids order, in
 * the ctx output. full[i]=1: whole tree; 0: filtered by ns_list/exclude
 * (full NULL: all whole). A filtered entry whose view did not change is
 * left out. delta=1: each entry is the merge patch from the (filtered)
 * pre-image to the (filtered) current tree (null when nothing is left).
 * 0, or -1 ENOMEM. */
int fa_table_batch_encode (fa_table *t, const uint8_t *full, const char *ns_list,
                           size_t ns_len, int exclude, int delta);
/* fa_table_batch_encode, also saying where each entry is in the output, so
 * views can be spliced from two encodings without encoding again (events.py:
 * a guest's view = the public view with its own jobs' whole entries). n must
 * be the number of net-changed jobs (EINVAL otherwise, nothing written);
 * cuts[2n] is caller-owned. For entry i (batch_ids order): cuts[i] = start
 * of the first entry at index >= i that is in the output (or the offset of
 * the closing ']'), cuts[n+i] = end of the last one at index <= i (or 1).
 * Entry i is in the output iff cuts[i] < cuts[n+i], as out[cuts[i]..cuts[n+i]);
 * out[cuts[p]..cuts[n+q-1]) is the entries p..q-1 with their commas (empty
 * when start >= end). 0, or -1 (EINVAL, ENOMEM). */
int fa_table_batch_encode_cuts (fa_table *t, const uint8_t *full, const char *ns_list,
                                size_t ns_len, int exclude, int delta, uint64_t *cuts,
                                size_t n);
/* Forget all pre-images (tracking stays as it is). */
void fa_table_batch_clear (fa_table *t);
/* "[[id,tree|null],...]" of the current trees of ids[0..n) in the ctx
 * output; full as for batch_encode (no entry is left out). 0, or -1 ENOMEM. */
int fa_table_encode (fa_table *t, const uint64_t *ids, size_t n, const uint8_t *full,
                     const char *ns_list, size_t ns_len, int exclude);

/* ---- request frames of the wire protocol (fa_frame.c) ---- */

/* What fa_frames_scan applies: lim to every payload value (its key rules,
 * strict_keys, to annotations / memo only; the annotations object is at
 * depth 1, a memo at 2 as it goes under "user"); max_message to each
 * frame's length header; max_annotations / max_memo (0: none): a bracketed
 * annotations / memo value longer than that is not parsed at all, only
 * delimited, and flagged FA_FRAME_TOOBIG (a guest's payload is refused by
 * its length alone). */
typedef struct fa_frame_opts {
    fa_limits lim;
    uint32_t max_message;
    uint32_t max_annotations;
    uint32_t max_memo;
} fa_frame_opts;

/* One record per frame: FA_FRAME_WORDS uint64 words, in this order:
 *   status    bits 0-15 FA_FRAME_* flags (bits 8-9: "type"), bits 16-31 the topic's index + 1
 *             in the caller's list (0: not in it, or escaped; in a fault
 *             record, 0 unless the topic was read before the fault), bits
 *             32-63 errnum (0: the frame was decoded)
 *   matchtag  (flag FA_FRAME_MATCHTAG: it was read, before any fault)
 *   id        the payload's "id" when it is an integer in [0, 2^64); for an
 *             EMSGSIZE record, the length the header announced
 *   value     offset and length in buf of the annotations / memo value
 *   keys      offset and length in the ctx output of the annotations'
 *             top-level keys, each followed by a NUL (hot annotate only)
 *   payload   offset and length in buf of the payload value
 *   topic     offset and length in buf of the topic string (no quotes;
 *             FA_FRAME_TOPIC_ESC: it holds escapes)
 *   end       offset in buf just after the frame (EMSGSIZE: its header) */
#define FA_FRAME_WORDS 12
#define FA_FRAME_MATCHTAG 0x01  /* the matchtag was read */
#define FA_FRAME_HOT 0x02       /* payload is exactly id (uint64), annotations
                                   or memo (an object; annotations: plain keys,
                                   values objects or null), volatile (bool) and
                                   type (0..3) at most once each, nothing else */
#define FA_FRAME_MEMO 0x04      /* the value is "memo" (else "annotations") */
#define FA_FRAME_VOLATILE 0x08  /* "volatile": true */
#define FA_FRAME_TOOBIG 0x10    /* a value exceeds max_annotations / max_memo:
                                   delimited only, NOT validated (its span is
                                   the record's value); the frame must be
                                   refused whatever else it holds */
#define FA_FRAME_TOPIC_ESC 0x20 /* the topic string holds escapes */
#define FA_FRAME_TYPE 0x40      /* "type" is an integer 0..3 (an alloc response's),
                                   its value in the FA_FRAME_TYPE_MASK bits */
#define FA_FRAME_TYPE_SHIFT 8
#define FA_FRAME_TYPE_MASK 0x300

/* Decode the complete frames (4-byte big-endian length + body) at the
 * start of buf[0..len), at most cap of them, one record each into rec
 * (cap * FA_FRAME_WORDS words, owned by the caller); topics is the
 * caller's list of topic names ("a\0b\0", topics_len bytes). *nrec: the
 * records written; *used: bytes of buf they cover (an incomplete last
 * frame is left for the next call). The ctx output holds the key lists.
 * A frame that cannot be served gets errnum in its record and its
 * sentence in the ctx, and the scan stops after it: EPROTO (grammar;
 * anything wrong outside the payload; matchtag / topic / payload missing
 * or mistyped), EINVAL (a limit, invalid UTF-8 or a lone surrogate, a
 * number out of range inside the payload: the sentence names the field
 * and the limit), EMSGSIZE (length above max_message: its record covers
 * no byte, the body is never read). Returns 0 (no fault), 1 (the last
 * record is a fault), -1 (ENOMEM: records before *nrec stay valid). */
int fa_frames_scan (fa_ctx *ctx, const char *buf, size_t len, const fa_frame_opts *opt,
                    const char *topics, size_t topics_len, uint64_t *rec, size_t cap,
                    size_t *nrec, size_t *used);

/* The success replies of mts[0..n) (length-prefixed frames of
 * {"matchtag":M,"errnum":0,"payload":{}}), one after the other, in the
 * ctx output. 0, or -1 ENOMEM. */
int fa_reply_ok (fa_ctx *ctx, const uint64_t *mts, size_t n);

/* Check that the JSON text s[0..len) nests at most max_depth objects and
 * arrays, without recursion and without validating anything else (clients
 * run it before a recursive decoder). 0, or -1 EINVAL "nesting depth
 * exceeds N at byte K". */
int fa_json_nesting (fa_ctx *ctx, const char *s, size_t len, uint32_t max_depth);

/* ---- the client side of the wire protocol (fa_client.c) ---- */

/* One record per reply: FA_REPLY_WORDS uint64 words, in this order:
 *   status    bits 0-31 FA_REPLY_* flags, bits 32-63 errnum (0 to 4095)
 *   matchtag
 *   errstr    offset and length in buf of the errstr string, quotes
 *             included (flag FA_REPLY_ERRSTR; absent or null: 0, 0)
 *   payload   offset and length in buf of the payload object (flag
 *             FA_REPLY_PAYLOAD; absent or null: 0, 0) */
#define FA_REPLY_WORDS 6
#define FA_REPLY_ERRSTR 0x1     /* errstr is a string */
#define FA_REPLY_ERRSTR_ESC 0x2 /* ... holding escapes (decode its span as JSON) */
#define FA_REPLY_PAYLOAD 0x4    /* payload is an object */

/* Read the complete reply frames (4-byte big-endian length + body) at the
 * start of buf[0..len), at most cap of them, one record each into rec
 * (cap * FA_REPLY_WORDS words, owned by the caller). Each body must be a
 * JSON object whose "matchtag" is a non-negative integer, "errnum" (0 if
 * absent) an integer below 4096, "errstr" a string or null, "payload" an
 * object or null; every value is parsed (UTF-8, grammar) with at most
 * max_depth levels of nesting, the body itself counting 1; other members
 * are allowed, a repeated member's last value counts. *nrec: the records
 * written; *used: the bytes they cover (an incomplete frame is left for
 * the next call); *nerr: how many of them have an errnum. Returns 0; 1
 * when the frame at *used is malformed (EPROTO, "malformed response from
 * the service: ..." in ctx; the records before it are valid); -1 ENOMEM.
 * No output text (ctx's output is left alone). */
int fa_replies_scan (fa_ctx *ctx, const char *buf, size_t len, uint32_t max_depth,
                     uint64_t *rec, size_t cap, size_t *nrec, size_t *used, size_t *nerr);

#define FA_REQ_VOLATILE 0x1 /* "volatile":true in every payload */
#define FA_REQ_ARRAY 0x2    /* patches is one JSON array text of the n patches
                               (else: n texts joined by n-1 NUL bytes) */

/* The request frames of n annotate or memo calls, one after the other, in
 * the ctx output: frame i is (4-byte big-endian length, then)
 *   {"topic":"TOPIC","matchtag":mt0+i,"payload":{"id":ids[i],"MEMBER":patch i[,"volatile":true]}}
 * topic and member are NUL-terminated and written as they are (plain
 * names: the caller's constants). Each patch is parsed with lim (the patch
 * itself at depth 1; whitespace around it allowed and dropped) and copied
 * as it was written. Returns 0, or -1 with *failed_index (may be NULL) the
 * index of the patch at fault and nothing in the output: EINVAL (patch i
 * is not valid JSON or breaks lim; fewer NUL-separated texts than n;
 * FA_REQ_ARRAY: not an array of exactly n values), EMSGSIZE (frame i's
 * body would exceed max_body bytes), ENOMEM. */
int fa_requests_encode (fa_ctx *ctx, const char *topic, const char *member, uint64_t mt0,
                        const uint64_t *ids, const char *patches, size_t len, size_t n,
                        int flags, const fa_limits *lim, uint32_t max_body,
                        size_t *failed_index);

#ifdef __cplusplus
}
#endif


/* Estimates (fa_scan.c, docs/accuracy.md). Find "t_estimate" and "queue"
 * in the object under the top-level key "sched" of the JSON object text
 * s[0..len) (text the core's parser has accepted: a patch or a stored
 * tree). Returns a set of the flags below, 0 when neither is there:
 * FA_EST_NUMBER: out[0], out[1] = offset and length of the number's text;
 * FA_EST_OTHER: t_estimate is there but is no number (string, bool,
 * object, array); FA_EST_NULL: it is null (a patch removing it);
 * FA_QUEUE: out[2], out[3] = offset and length of the queue string's body
 * (no escapes in it); FA_SCAN_SLOW: the text is not a well-formed object,
 * or a key or the queue is written with escapes: the caller must decode
 * the text to know. The last of duplicate keys wins. Pure: no allocation,
 * no recursion, never reads outside s[0..len); s and out are borrowed. */
#define FA_EST_NUMBER 1u
#define FA_EST_OTHER 2u
#define FA_EST_NULL 4u
#define FA_QUEUE 8u
#define FA_SCAN_SLOW 16u
unsigned fa_sched_scan (const char *s, size_t len, size_t out[4]);


/* Estimate histories (fa_hist.c, docs/accuracy.md): job id -> the distinct
 * sched.t_estimate values it was given while pending, as pairs
 * (t_estimate, at), at most FA_HIST_MAX kept (then the third oldest is
 * dropped), how many there were, and its start (allocation) or the time it
 * left without starting (NAN: not yet). Every call that changes a record
 * lists it as dirty until fa_hist_take_dirty. All memory goes through the
 * history's ctx; on ENOMEM nothing visible changes (a new record may stay
 * empty, which reads as none). */
typedef struct fa_hist fa_hist;
#define FA_HIST_MAX 64
typedef struct fa_hist_info {
    const double *pairs; /* borrowed: valid until the record next changes */
    uint32_t kept, n;
    double start, ended; /* NAN: not yet */
} fa_hist_info;

fa_hist *fa_hist_new (void);                  /* NULL: ENOMEM */
void fa_hist_destroy (fa_hist *h);            /* accepts NULL */
fa_ctx *fa_hist_ctx (fa_hist *h);             /* borrowed: errors */
size_t fa_hist_count (const fa_hist *h);      /* records (jobs with a history) */
size_t fa_hist_memory (const fa_hist *h);     /* every byte the histories hold */
uint64_t fa_hist_version (const fa_hist *h);  /* bumped by every change */
uint64_t fa_hist_bad (const fa_hist *h);      /* estimates that were no finite number */
void fa_hist_add_bad (fa_hist *h, uint64_t n);
/* Job id was given `value` at `at` (both finite, else -1 EINVAL). 1
 * recorded; 0 not (the value in force already, or the job started or
 * left); -1 ENOMEM. */
int fa_hist_estimate (fa_hist *h, uint64_t id, double value, double at);
/* The job started (started=1) or left without starting (0) at `at`: 1
 * recorded (it has a history, neither yet), 0 not, -1 ENOMEM. */
int fa_hist_end (fa_hist *h, uint64_t id, double at, int started);
/* 1 and *info (borrowed pointers), or 0: no history. */
int fa_hist_get (const fa_hist *h, uint64_t id, fa_hist_info *info);
/* Install a stored record (replaces; not dirty). 0, -1 EINVAL (kept not in
 * 1..FA_HIST_MAX or n < kept) or ENOMEM. pairs is copied. */
int fa_hist_load (fa_hist *h, uint64_t id, const double *pairs, uint32_t kept, uint32_t n,
                  double start, double ended);
size_t fa_hist_ids (const fa_hist *h, uint64_t *ids, size_t cap);      /* every job with one */
size_t fa_hist_dirty_count (const fa_hist *h);
/* Up to cap dirty ids into ids, no longer dirty; the rest stay listed. */
size_t fa_hist_take_dirty (fa_hist *h, uint64_t *ids, size_t cap);
int fa_hist_mark_dirty (fa_hist *h, uint64_t id);  /* again (a write failed): 1, 0 none, -1 */
/* The estimate in the JSON object text (fa_sched_scan) recorded for job id
 * at `at` (< 0: now, CLOCK_REALTIME); a value that is no finite number is
 * counted bad. Returns FA_QUEUE and/or FA_SCAN_SLOW when the caller must
 * read the text itself (the queue; escapes, a long number, ENOMEM), else 0. */
unsigned fa_hist_note (fa_hist *h, uint64_t id, const char *text, size_t len, double at);
/* The store's form (docs/accuracy.md): the dirty records (all=0) or every
 * record (all=1) one after the other in the ctx output (u64 id, f64 start,
 * f64 ended, u32 n, u32 k with the top bit set when the k pairs of f64 that
 * follow are the whole record, clear when they are only the values given
 * since the record was last dumped; native byte order); no record is dirty
 * afterwards. Loading the dumps in order rebuilds the records. Returns the
 * number of records, or -1 ENOMEM (then they stay dirty). */
long fa_hist_dump (fa_hist *h, int all);
/* The dump has been copied: release a large output buffer (a dump of every
 * record must not stay allocated). */
void fa_hist_dump_done (fa_hist *h);
/* Install the records of a dump: a whole record replaces the job's, new
 * values are appended to it by the rule of fa_hist_estimate. None is dirty
 * afterwards. 0, -1 EINVAL (truncated, corrupt, or new values of a job
 * without a record: the records before it stay installed) or ENOMEM. */
int fa_hist_load_dump (fa_hist *h, const char *buf, size_t len);
/* Mark the jobs of a dump dirty again (its write failed). 0 / -1. */
int fa_hist_redirty_dump (fa_hist *h, const char *buf, size_t len);
/* The report's material: every record that started or left, in the ctx
 * output as m ids (u64) then m rows of FA_HIST_ROW + nh doubles: start,
 * ended, n, first t_estimate, its at, last t_estimate, its at (NAN where
 * none), then for each horizon H the error start - (the estimate in force
 * H seconds before the start), NAN when none was (or it is not known: it
 * was among the dropped values, or the job never started). Returns m, or
 * -1 ENOMEM. */
#define FA_HIST_ROW 7
long fa_hist_rows (fa_hist *h, const double *horizons, size_t nh);
/* fa_table_annotate, then, when the job changed and the patch names
 * t_estimate, fa_hist_note (h may be NULL: nothing recorded). -1 on the
 * table's error (nothing recorded), 0 unchanged, else 1 | the bits of
 * fa_hist_note shifted left by one (2: FA_QUEUE, 32: FA_SCAN_SLOW). The
 * scheduler's ANNOTATE hot path: one call. */
int fa_table_annotate_sched (fa_table *t, fa_hist *h, uint64_t id, const char *patch,
                             size_t len, double at);

#endif /* FA_H */
