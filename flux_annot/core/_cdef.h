/* cffi cdef of flux_annot.core._core: the declarations of csrc/fa.h that Python
 * uses. Values and opaque types are never restated (`...`). */
typedef struct fa_ctx fa_ctx;
typedef struct fa_table fa_table;

typedef struct fa_limits {
    uint32_t max_depth;
    uint32_t max_key_bytes;
    uint32_t max_object_keys;
    uint32_t strict_keys;
} fa_limits;

typedef struct fa_info {
    int changed;
    size_t old_len, new_len;
    size_t old_ns_len, new_ns_len;
} fa_info;

#define FA_REPLACE ...
#define FA_DRYRUN ...
#define FA_DEPTH_CAP ...

fa_ctx *fa_ctx_new (void);
void fa_ctx_destroy (fa_ctx *ctx);
int fa_ctx_errnum (const fa_ctx *ctx);
const char *fa_ctx_errmsg (const fa_ctx *ctx);
const char *fa_ctx_output (const fa_ctx *ctx, size_t *len);

int fa_canonical (fa_ctx *ctx, const char *text, size_t len, const fa_limits *lim);
int fa_merge (fa_ctx *ctx, const char *tree, size_t tlen, const char *patch, size_t plen,
              const fa_limits *lim);
int fa_diff (fa_ctx *ctx, const char *old, size_t olen, const char *new_, size_t nlen);

fa_table *fa_table_new (void);
void fa_table_destroy (fa_table *t);
fa_ctx *fa_table_ctx (fa_table *t);
size_t fa_table_count (const fa_table *t);
size_t fa_table_memory (const fa_table *t);
int fa_table_apply (fa_table *t, uint64_t id, const char *patch, size_t len,
                    const fa_limits *lim, const char *ns, size_t nslen, int flags,
                    fa_info *info);
int fa_table_annotate (fa_table *t, uint64_t id, const char *patch, size_t len);
void fa_table_set_limits (fa_table *t, const fa_limits *lim);
int fa_table_commit (fa_table *t);
int fa_table_apply_many (fa_table *t, const uint64_t *ids, const char *buf,
                         const size_t *offsets, size_t n, const fa_limits *lim,
                         size_t *nchanged, size_t *failed_index);
int fa_table_get (fa_table *t, uint64_t id, const char **text, size_t *len);
int fa_table_get_view (fa_table *t, uint64_t id, const char *ns_list, size_t ns_len,
                       int exclude);
int fa_table_remove (fa_table *t, uint64_t id);
size_t fa_table_ids (fa_table *t, uint64_t *ids, size_t cap);
void fa_table_track (fa_table *t, int on);
size_t fa_table_batch_count (const fa_table *t);
size_t fa_table_batch_ids (fa_table *t, uint64_t *ids, size_t cap);
int fa_table_batch_encode (fa_table *t, const uint8_t *full, const char *ns_list,
                           size_t ns_len, int exclude, int delta);
int fa_table_batch_encode_cuts (fa_table *t, const uint8_t *full, const char *ns_list,
                                size_t ns_len, int exclude, int delta, uint64_t *cuts,
                                size_t n);
void fa_table_batch_clear (fa_table *t);
int fa_table_encode (fa_table *t, const uint64_t *ids, size_t n, const uint8_t *full,
                     const char *ns_list, size_t ns_len, int exclude);

typedef struct fa_frame_opts {
    fa_limits lim;
    uint32_t max_message;
    uint32_t max_annotations;
    uint32_t max_memo;
} fa_frame_opts;
#define FA_FRAME_WORDS ...
#define FA_FRAME_MATCHTAG ...
#define FA_FRAME_HOT ...
#define FA_FRAME_MEMO ...
#define FA_FRAME_VOLATILE ...
#define FA_FRAME_TOOBIG ...
#define FA_FRAME_TOPIC_ESC ...
#define FA_FRAME_TYPE ...
#define FA_FRAME_TYPE_SHIFT ...
#define FA_FRAME_TYPE_MASK ...
int fa_frames_scan (fa_ctx *ctx, const char *buf, size_t len, const fa_frame_opts *opt,
                    const char *topics, size_t topics_len, uint64_t *rec, size_t cap,
                    size_t *nrec, size_t *used);
int fa_reply_ok (fa_ctx *ctx, const uint64_t *mts, size_t n);
int fa_json_nesting (fa_ctx *ctx, const char *s, size_t len, uint32_t max_depth);

#define FA_REPLY_WORDS ...
#define FA_REPLY_ERRSTR ...
#define FA_REPLY_ERRSTR_ESC ...
#define FA_REPLY_PAYLOAD ...
#define FA_REQ_VOLATILE ...
#define FA_REQ_ARRAY ...
int fa_replies_scan (fa_ctx *ctx, const char *buf, size_t len, uint32_t max_depth,
                     uint64_t *rec, size_t cap, size_t *nrec, size_t *used, size_t *nerr);
int fa_requests_encode (fa_ctx *ctx, const char *topic, const char *member, uint64_t mt0,
                        const uint64_t *ids, const char *patches, size_t len, size_t n,
                        int flags, const fa_limits *lim, uint32_t max_body,
                        size_t *failed_index);
#define FA_EST_NUMBER ...
#define FA_EST_OTHER ...
#define FA_EST_NULL ...
#define FA_QUEUE ...
#define FA_SCAN_SLOW ...
unsigned fa_sched_scan (const char *s, size_t len, size_t out[4]);

typedef struct fa_hist fa_hist;
#define FA_HIST_MAX ...
typedef struct fa_hist_info {
    const double *pairs;
    uint32_t kept, n;
    double start, ended;
} fa_hist_info;
fa_hist *fa_hist_new (void);
void fa_hist_destroy (fa_hist *h);
fa_ctx *fa_hist_ctx (fa_hist *h);
size_t fa_hist_count (const fa_hist *h);
size_t fa_hist_memory (const fa_hist *h);
uint64_t fa_hist_version (const fa_hist *h);
uint64_t fa_hist_bad (const fa_hist *h);
void fa_hist_add_bad (fa_hist *h, uint64_t n);
int fa_hist_estimate (fa_hist *h, uint64_t id, double value, double at);
int fa_hist_end (fa_hist *h, uint64_t id, double at, int started);
int fa_hist_get (const fa_hist *h, uint64_t id, fa_hist_info *info);
int fa_hist_load (fa_hist *h, uint64_t id, const double *pairs, uint32_t kept, uint32_t n,
                  double start, double ended);
size_t fa_hist_ids (const fa_hist *h, uint64_t *ids, size_t cap);
size_t fa_hist_dirty_count (const fa_hist *h);
size_t fa_hist_take_dirty (fa_hist *h, uint64_t *ids, size_t cap);
int fa_hist_mark_dirty (fa_hist *h, uint64_t id);
unsigned fa_hist_note (fa_hist *h, uint64_t id, const char *text, size_t len, double at);
int fa_table_annotate_sched (fa_table *t, fa_hist *h, uint64_t id, const char *patch,
                             size_t len, double at);
long fa_hist_dump (fa_hist *h, int all);
int fa_hist_load_dump (fa_hist *h, const char *buf, size_t len);
int fa_hist_redirty_dump (fa_hist *h, const char *buf, size_t len);
void fa_hist_dump_done (fa_hist *h);
#define FA_HIST_ROW ...
long fa_hist_rows (fa_hist *h, const double *horizons, size_t nh);
