/* Internal structures of the ptcopy engine. Not part of the cffi interface.
 *
 * Layering: a file calls only files on its own line (as noted) or below it, never above, so the
 * C files do not depend on each other in a circle.
 *   set.c  setctl.c      sets' lifecycle (enable/open/close/disable); the other control calls;
 *   imported.c           shadows imported from another host (internal.h: their I/O rules)
 *   copy.c group_hold.c  starting copies (one set or a group), abort, wait, progress; a group
 *   reset.c              point in time held across calls (group_hold.c); reset (reset.c)
 *   copy_record.c        what a point in time records in each set (header flags, copy and
 *                        shadow bits) and their parallel flushes, in the steps copy.c orders
 *   copier.c             the copier thread and its workers (direct_io.c: their O_DIRECT reads
 *                        and writes, beside util.c)
 *   io.c  cow_commit.c   reads and writes: redirection, copy-on-write, copy-on-demand;
 *                        making a write's copies and bits durable in order
 *   meta.c               the bitmap volume: layout, header, load, group-committed flushes
 *   chunk.c  master.c    a set's chunks (addressing, bits, compact slots, offline marking);
 *   fallback.c           masters and the volume checks; the fallback record
 *   overflow.c           overflow volumes (overflow_hdr.c: their header)
 *   bits.c  util.c       bitmaps and images; errors, clocks, checksums, volumes, group commit
 * Beside the engine, on the public calls only: fuse.c + fuse_ops.c (the FUSE server) and
 * dm.c + dm_run.c (device-mapper ioctls and transactions; util.c only).
 *
 * Error unwinding: a function that sets up several things undoes them through a ladder of
 * labels, last set up first undone (out_<what the label undoes>), as the kernel does.
 *
 * Lock order (outer to inner): set ctl_mu (sorted by address when several) -> master gate
 * (sorted by address) -> chunk stripes (ascending) -> set meta_mu -> overflow mu.
 * Group-commit locks (pt_gcommit.mu) are leaves: nothing else is taken while one is held.
 * The overflow's hdr_mu is taken with no meta_mu or overflow mu held, and only overflow mu
 * is taken under it.
 *
 * I/O rule: meta_mu and overflow mu are never held across I/O (headers are encoded under them
 * and written after they are released, see meta_flush_fn and ov_write_header), so pt_set_status,
 * pt_set_progress and pt_overflow_status, which take only those, never wait for a device.
 * ctl_mu and the gate may be held across I/O: status and progress read the fields they protect
 * with atomic loads instead of taking them (PT_LOAD; writers use PT_STORE under the lock).
 */
#ifndef PTCOPY_INTERNAL_H
#define PTCOPY_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/eventfd.h>
#include <sys/types.h>

#include "ptcopy_engine.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ptcopy's bitmap words assume a little-endian host"
#endif

#define PT_PAGE 4096u
#define PT_HDR_SIZE 4096u
#define PT_STRIPES 1024u
#define PT_MAX_SIBLINGS 64
#define PT_OV_MAX_SETS 128
#define PT_IO_MAX (1u << 20)       /* largest single data I/O the copier issues */
#define PT_COPY_BATCH (8u << 20)   /* bytes copied between two target syncs */
#define PT_COW_RUN (4u << 20)      /* largest copy-on-write read a write issues */
#define PT_DEFAULT_UNITS 256u
#define PT_DELAY_MAX 60000u       /* ms: a longer throttle pause is surely a mistake */
#define PT_UNITS_MAX (1u << 24)

/* The runtime PT_F_* flags that say a volume is offline. */
#define PT_OFFLINE_MASK (PT_F_MASTER_OFFLINE | PT_F_SHADOW_OFFLINE | PT_F_BITMAP_OFFLINE | \
                         PT_F_OVERFLOW_OFFLINE)

/* Fields written under ctl_mu (or the gate) and read without it by status/progress. */
#define PT_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define PT_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* ---- errors ---- */
int pt_fail(pt_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
uint64_t pt_now_ns(void);      /* CLOCK_MONOTONIC */
uint64_t pt_wall_ns(void);     /* CLOCK_REALTIME */
/* ms from now on CLOCK_MONOTONIC, for condition variables set up with that clock */
struct timespec pt_deadline_ms(uint64_t ms);
uint32_t pt_crc32c(const void *data, size_t len);
void pt_uuid_generate(uint8_t out[16]);
bool pt_uuid_is_zero(const uint8_t u[16]);

/* ---- group commit: run fn once for many concurrent callers ---- */
typedef int (*pt_gc_fn)(void *arg);
typedef struct pt_gcommit {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t started;    /* generation of the last run begun */
    uint64_t completed;  /* generation of the last run finished */
    uint64_t err_gen;    /* last generation that failed */
    int err_rc;
    bool running;
} pt_gcommit;
int pt_gc_init(pt_gcommit *g);
void pt_gc_destroy(pt_gcommit *g);
/* Returns once a run of fn that began after this call has finished; its result. */
int pt_gc_run(pt_gcommit *g, pt_gc_fn fn, void *arg);

/* ---- volumes ---- */
typedef struct pt_vol {
    int fd;
    bool is_blk;
    dev_t dev;
    ino_t ino;
    uint64_t size;
    char path[512];
    const char *role;       /* "master", "shadow", ... (static string) */
    atomic_int offline;
    atomic_int inject;      /* fault injection: 0, or the errno every I/O fails with */
    pt_gcommit sync;
} pt_vol;
int pt_vol_open(pt_vol *v, const pt_volspec *spec, const char *role, pt_error *err);
void pt_vol_close(pt_vol *v);
bool pt_vol_same(const pt_vol *a, const pt_vol *b);
/* The whole range or an error (-errno; -EIO at the end of the volume); *done: bytes moved */
int pt_fd_rw(int fd, void *buf, size_t len, uint64_t off, bool write, size_t *done);
/* A condition variable whose timed waits count on CLOCK_MONOTONIC (deadlines that a change of
 * the wall clock cannot move); 0 or an errno. */
int pt_cond_init_monotonic(pthread_cond_t *cv);
int pt_vol_pread(pt_vol *v, void *buf, size_t len, uint64_t off);
int pt_vol_pwrite(pt_vol *v, const void *buf, size_t len, uint64_t off);
int pt_vol_sync(pt_vol *v);   /* group-committed fdatasync */
int pt_vol_zero(pt_vol *v, uint64_t off, uint64_t len);
/* 0, or the negated errno fault injection makes this volume's I/O fail with. */
static inline int pt_vol_injected(pt_vol *v) { return -atomic_load(&v->inject); }

/* ---- bitmaps with per-page population counts (fast scans of huge sparse bitmaps) ---- */
#define PT_BITS_PER_PAGE (PT_PAGE * 8u)
typedef struct pt_bits {
    uint64_t *w;          /* words inside the metadata image */
    uint64_t nbits;
    uint64_t npages;
    uint32_t *pcnt;       /* set bits per page */
    uint64_t count;
    uint64_t img_off;     /* byte offset of w inside the image (for dirty marking) */
} pt_bits;
/* words must hold npages whole pages (the padding is part of the bitmap). */
int pt_bits_attach(pt_bits *b, uint64_t *words, uint64_t nbits, uint64_t img_off);
void pt_bits_free(pt_bits *b);
static inline bool pt_bit_get(const pt_bits *b, uint64_t i)
{
    return (__atomic_load_n(&b->w[i >> 6], __ATOMIC_RELAXED) >> (i & 63)) & 1u;
}
bool pt_bit_set(pt_bits *b, uint64_t i);     /* true if it changed */
bool pt_bit_clear(pt_bits *b, uint64_t i);   /* true if it changed */
uint64_t pt_bits_next(const pt_bits *b, uint64_t from);  /* nbits when none */
uint64_t pt_bits_run(const pt_bits *b, uint64_t from, uint64_t max);
/* Page-granular bulk operations; each calls mark(ctx, img_off) for every page it changes. */
typedef void (*pt_mark_fn)(void *ctx, uint64_t img_off);
void pt_bits_or(pt_bits *dst, const pt_bits *src, pt_mark_fn mark, void *ctx);
void pt_bits_zero(pt_bits *b, pt_mark_fn mark, void *ctx);
void pt_bits_fill(pt_bits *b, pt_mark_fn mark, void *ctx);
/* Recounts from the words; bits past nbits (padding of the last word and page: only corruption
 * or a foreign bitmap puts them there) are cleared first. Returns how many were cleared. */
uint64_t pt_bits_recount(pt_bits *b);

/* ---- an in-memory image of on-disk metadata with dirty-page tracking ---- */
typedef struct pt_image {
    uint8_t *buf;
    uint64_t size;        /* bytes, multiple of PT_PAGE */
    uint64_t file_off;    /* where buf[0] lives on the volume */
    uint8_t *pdirty;
    uint64_t *dlist;
    uint64_t ndirty;
    uint64_t dcap;
} pt_image;
int pt_image_alloc(pt_image *im, uint64_t size, uint64_t file_off);
void pt_image_free(pt_image *im);
void pt_image_mark(void *im, uint64_t img_off);
/* Move the dirty pages into a staging list (caller holds the owner's lock). */
typedef struct pt_staged {
    uint64_t *pages;
    uint8_t *data;
    uint64_t n;
} pt_staged;
int pt_image_stage(pt_image *im, pt_staged *st);
int pt_staged_write(pt_vol *v, uint64_t file_off, pt_staged *st);
void pt_staged_free(pt_staged *st);

/* ---- engine objects ---- */
typedef struct pt_master {
    pt_vol vol;
    int nsets;
    pt_set *sets[PT_MAX_SIBLINGS];
    uint32_t chunk;
    /* Writers and copiers hold gate shared; freezes (copy start, group point in time) hold it
     * exclusive. Writer-preferring so a freeze is not starved by steady I/O. */
    pthread_rwlock_t gate;
    pthread_rwlock_t stripes[PT_STRIPES];
    struct pt_master *next;
} pt_master;

struct pt_overflow {
    pt_engine *eng;
    pt_vol vol;
    /* never changed after open */
    uint8_t uuid[16];
    uint32_t chunk;
    uint64_t nchunks;
    uint64_t data_off;
    /* serialises header writes: each encodes the state current when it holds this lock, so an
     * older encoding never lands after a newer one */
    pthread_mutex_t hdr_mu;
    /* protected by mu */
    pthread_mutex_t mu;
    bool retired;          /* being closed or deleted: no set may hold or attach it any more */
    bool wiped;            /* delete wiped the header (under hdr_mu) */
    pt_image img;          /* the allocation bitmap */
    pt_bits alloc;
    pt_bits refs;          /* reconcile after an unclean stop: chunks the open sets reference */
    uint8_t set_uuids[PT_OV_MAX_SETS][16];
    int nsets;
    int nopen;             /* open sets attached */
    bool counted[PT_OV_MAX_SETS];   /* attached sets whose references were counted */
    bool counters_valid;
    bool hdr_dirty;
    uint64_t hint;
    pt_gcommit gc;
    struct pt_overflow *next;
};

struct pt_engine {
    pthread_mutex_t mu;     /* the lists below */
    pt_master *masters;
    pt_set *sets;
    pt_overflow *overflows;
    atomic_bool defer_copies;  /* kernel path: copies start only when asked, from a frozen view */
};

/* persistent flags in the bitmap header */
#define PT_PF_COMPACT 0x01u
#define PT_PF_COPYING 0x02u
#define PT_PF_TO_MASTER 0x04u
#define PT_PF_OUT_OF_SPACE 0x08u
#define PT_PF_INCOMPLETE 0x10u
#define PT_PF_NEED_RESYNC 0x20u   /* closed with a volume offline: serve the shadow only after a reset */
#define PT_PF_SPILLED 0x40u
#define PT_PF_SUSPENDED 0x80u  /* with COPYING: the copy waits for pt_set_resume (setctl.c) */
#define PT_PF_SIBLINGS 0x100u  /* the recorded restore has other sets on its master */
#define PT_PF_EXPORTED 0x200u  /* the shadow is exported (rflags has PT_F_EXPORTED while so) */

/* compact index entries: 0 none, 1..0x7fffffff shadow slot + 1, >= 0x80000000 overflow slot */
#define PT_IDX_OV 0x80000000u
#define PT_IDX_NONE 0u

struct pt_set {
    pt_engine *eng;
    pt_master *m;
    pt_vol shadow;
    pt_vol bitmap;
    bool bitmap_mem;
    /* never changed after open */
    int kind;
    bool compact;
    uint32_t chunk;
    unsigned cshift;
    uint64_t master_size;
    uint64_t shadow_size;
    uint64_t nchunks;
    uint64_t shadow_slots;
    uint64_t idx_off, dbm_off, cbm_off, total_size;
    uint8_t uuid[16];
    char name[512];         /* the shadow path: sets are named by their shadow, as in iiadm */

    /* protected by meta_mu */
    pthread_mutex_t meta_mu;
    pt_image img;
    pt_bits D;              /* shadow bitmap: chunk may differ / dependent: shadow holds it */
    pt_bits C;              /* copy bitmap: a copy still has to move the chunk */
    uint32_t *idx;          /* compact index (inside img) */
    uint64_t *slots;        /* compact: shadow slots in use (memory only) */
    uint64_t slots_used, slot_hint, ov_used, lost;
    /* compact slots freed in memory, handed back only once the freeing flush is durable */
    uint32_t *rel;
    uint64_t nrel, relcap;
    uint32_t pflags;
    uint64_t generation;
    uint64_t last_modified;
    uint8_t ov_uuid[16];
    bool hdr_dirty;
    uint32_t hdr_state;     /* state the next header write records; DISABLED is final */
    pt_gcommit meta_gc;     /* every header write goes through it (never two at once) */
    pt_overflow *ov;

    /* protected by ctl_mu */
    pthread_mutex_t ctl_mu;
    pthread_cond_t ctl_cv;
    pthread_t thr;
    bool thr_live;          /* a copier thread exists (maybe finished, not yet joined) */
    bool thr_done;
    int64_t lock_owner;
    pt_vol src;             /* kernel path: frozen source for copies, when has_src */
    bool has_src;
    pt_vol dst;             /* kernel path: the device restores write the master through */
    bool has_dst;
    bool held;              /* a recorded restore, copying but without its thread (RESTORE_HELD) */
    /* read by I/O under the gate; changed only with the gate held exclusive */
    bool copying;
    int dir;
    /* atomics */
    atomic_int retired;     /* disable began: no copy, reset or attachment any more */
    atomic_int closing;     /* the handle is about to be freed: waits return PT_E_CLOSED */
    atomic_int abort_req;
    atomic_int stop_req;
    atomic_int suspend_req; /* with stop_req: the stop is a suspension (copying stays) */
    atomic_uint rflags;     /* runtime PT_F_* offline bits */
    atomic_uint delay_ms;
    atomic_uint units;
    atomic_uint_fast64_t total, left_end, start_ns, end_ns;
    atomic_int result;
    /* eventfd, readable exactly while no copier thread runs (pt_set_done_fd): drained by
     * pt_copier_spawn before the thread starts, written by its end once thr_done is set */
    int done_fd;
    struct pt_hold *hold;   /* a group hold has frozen it (group_hold.c); set under ctl_mu */

    /* The fallback record (pt_set_fallback): where a bitmap that went offline is declared lost
     * when its bits live in memory only. fb_mu is a leaf, held across the record's I/O only. */
    pthread_mutex_t fb_mu;
    int fb_fd;              /* -1: none given */
    atomic_int fb_lost;     /* the record durably says "bitmap lost" */
    struct pt_set *next;
};

/* meta.c */
int pt_meta_layout(uint64_t master_size, uint64_t shadow_size, uint32_t chunk, int kind,
                   uint64_t *idx_off, uint64_t *dbm_off, uint64_t *cbm_off, uint64_t *total,
                   pt_error *err);
int pt_meta_create(pt_set *s, pt_error *err);
int pt_meta_load(pt_set *s, uint64_t expect_master, uint64_t expect_shadow, pt_error *err);
int pt_meta_flush(pt_set *s);          /* group-committed; 0 or -errno */
int pt_meta_rewrite(pt_set *s);        /* all of it, even while offline; 0 or -errno */
/* Records state (sticky once DISABLED) and writes the header through the group commit, after
 * the dirty pages; durable on return. Caller must not hold meta_mu. A failure takes the bitmap
 * volume offline, as a failed flush does. */
int pt_meta_write_header(pt_set *s, uint32_t state, pt_error *err);
void pt_meta_free(pt_set *s);

#define PT_STATE_CLEAN 1u
#define PT_STATE_DIRTY 2u
#define PT_STATE_DISABLED 3u
#define PT_STATE_RELEASED 4u   /* an imported set's bitmap, handed back for a join */
/* DISABLED and RELEASED are final: no later header write changes them */
static inline bool pt_state_final(uint32_t st)
{
    return st == PT_STATE_DISABLED || st == PT_STATE_RELEASED;
}
/* pt_meta_load_mode: PT_LOAD_SET opens a set; PT_LOAD_JOIN reads a bitmap to join (an
 * imported one only once released; its sizes are not checked, the chunk count is) */
#define PT_LOAD_SET 0
#define PT_LOAD_JOIN 1
int pt_meta_load_mode(pt_set *s, int mode, uint64_t expect_master, uint64_t expect_shadow,
                      pt_error *err);
/* The kind and state a bitmap volume's header records; -1 when it holds no valid header. */
int pt_meta_peek(pt_vol *v, uint32_t *kind, uint32_t *state);
/* A joined imported bitmap (loaded into o, which no one else uses) is used up: its header says
 * disabled, durably, so it is neither joined twice nor kept from a new import. 0 or -errno. */
int pt_meta_mark_joined(pt_set *o);

/* overflow_hdr.c: encode a header (caller holds mu); decode one, taking its fields into ov
 * after checking them, *state and *nsets as recorded */
void pt_ov_encode(const pt_overflow *ov, uint8_t *h, uint32_t state);
int pt_ov_decode(pt_overflow *ov, const uint8_t *h, uint32_t *state, uint32_t *nsets,
                 pt_error *err);
static inline uint64_t pt_round_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

/* overflow.c */
int pt_ov_alloc(pt_overflow *ov, uint64_t *slot);   /* -ENOSPC when full; caller holds s->meta_mu */
void pt_ov_release(pt_overflow *ov, uint64_t slot);
int pt_ov_flush(pt_overflow *ov);
int pt_ov_add_set(pt_overflow *ov, const uint8_t uuid[16], pt_error *err);
int pt_ov_remove_set(pt_overflow *ov, const uint8_t uuid[16], pt_error *err);
/* An open set takes a reference (refused once the overflow is retired); pt_ov_set_closed
 * drops it. pt_ov_set_opened counts the set's references for reconciliation. */
int pt_ov_hold(pt_overflow *ov, pt_error *err);
void pt_ov_set_opened(pt_overflow *ov, pt_set *s);
void pt_ov_set_closed(pt_overflow *ov);

/* chunk.c */
uint64_t pt_chunk_len(const pt_set *s, uint64_t c);
void pt_set_offline(pt_set *s, unsigned flag);
/* bit helpers that keep the image dirty map right; caller holds meta_mu */
void pt_set_D(pt_set *s, uint64_t c);
void pt_clear_D(pt_set *s, uint64_t c);
void pt_set_C(pt_set *s, uint64_t c);
void pt_clear_C(pt_set *s, uint64_t c);
/* the compact index and its slots; caller holds meta_mu */
void pt_idx_put(pt_set *s, uint64_t c, uint32_t v);
static inline uint32_t pt_idx_get(const pt_set *s, uint64_t c)
{
    return __atomic_load_n(&s->idx[c], __ATOMIC_RELAXED);
}
int pt_slot_alloc(pt_set *s, uint64_t c, bool *spilled);   /* -ENOSPC when none is left */
/* Frees chunk c's place; it is handed back (pt_slots_release) once the cleared entry is
 * durable: after the next bitmap flush, or at once for a bitmap in memory. */
void pt_slot_free(pt_set *s, uint64_t c);
void pt_slots_release(pt_set *s, const uint32_t *rel, uint64_t n);
/* Where chunk c of the shadow lives: -ENOENT when a compact shadow has no place for it. */
int pt_phys(pt_set *s, uint64_t c, pt_vol **vol, uint64_t *off);

/* master.c; caller holds eng->mu */
typedef struct pt_volkey {
    bool blk;
    dev_t dev;
    ino_t ino;
} pt_volkey;
/* Identifies the master volume spec names (refuses a missing one), before anything is opened. */
int pt_master_key(const pt_volspec *spec, pt_volkey *key, pt_error *err);
/* The master already open for key, or a new one opened from spec. */
int pt_master_get(pt_engine *e, const pt_volspec *spec, const pt_volkey *key, pt_master **out,
                  pt_error *err);
void pt_master_put(pt_engine *e, pt_master *m);   /* frees it once no set uses it */
/* Refuses volumes that are the same as each other or already serve another set or overflow. */
int pt_check_volumes(pt_engine *e, pt_set *s, pt_master *m, pt_overflow *ov, pt_error *err);

/* fallback.c: the fallback record. pt_fb_lost: the bitmap is offline and a new bit lives in
 * memory only; records durably (once) that the set's bitmap is lost, before the master write
 * that needs the bit is issued. 0 when recorded; otherwise flags the set UNRECORDED and returns
 * -errno (-ENODEV: no fallback given). pt_fb_clear: every bit in memory is durable in the
 * bitmap again (a whole rewrite succeeded); the record goes back to "clear". Neither may be
 * called with meta_mu or an overflow mu held. pt_fb_adopt: takes a copy of the caller's
 * descriptor as the set's record (a regular file) and reads it: *lost when it says the bitmap
 * was lost, or is not a valid record of this set. */
int pt_fb_lost(pt_set *s);
void pt_fb_clear(pt_set *s);
int pt_fb_adopt(pt_set *s, int fd, bool *lost, pt_error *err);

/* io.c and cow_commit.c: one write's work for one set. Prepare records it; the commit makes
 * it durable in order (data, then bits); then the caller's data is written. */
#define PT_BIT_D 1u          /* set the shadow bit */
#define PT_BIT_D_NOT_C 2u    /* set the shadow bit and clear the copy bit */
typedef struct pt_wctx {
    pt_set *s;
    bool master_data, shadow_data, ov_data, ov_meta, meta;
    uint64_t c0;             /* the request's first chunk: bitop[i] is for chunk c0 + i */
    uint8_t *bitop;          /* bit changes, made in memory only once their data is durable */
    uint64_t *cow;           /* chunks to copy master -> shadow (first writes), ascending */
    uint64_t ncow;
} pt_wctx;
/* Marks v (one of s's volumes) failed, with the consequences pt_set_offline carries. */
void pt_vol_failed(pt_set *s, pt_vol *v);
/* Makes a prepared write durable: data syncs, overflow flushes, then the bit changes in memory
 * and the metadata flushes (all group-committed); nch: chunks in the request. -EIO when the
 * written side went offline. */
int pt_cow_commit(pt_master *m, pt_wctx *ws, int n, int side, uint64_t nch);

/* io.c */
void pt_lock_range(pt_master *m, uint64_t c0, uint64_t c1, bool excl);
void pt_unlock_range(pt_master *m, uint64_t c0, uint64_t c1);
int pt_copy_chunk(pt_set *s, uint64_t c, int dir, void *buf);
/* Before master chunks c0..c1 are written (by a writer or a restore's copier): every set of m
 * but skip keeps its point in time, as io.c's rules say: a dependent one receives the old data,
 * an independent one's bit is set, a running copy moves the chunk first; durable on return.
 * Sets being restored from come last (their copy-on-demand writes the master). mask: only the
 * chunks whose copy bit that set has (NULL: all). Caller holds the gate shared and the stripes
 * exclusive; cbuf holds one chunk. 0, -ENOMEM, -EIO (the master failed) or -PT_E_OUT_OF_SPACE. */
int pt_master_prepare(pt_master *m, const pt_set *skip, uint64_t c0, uint64_t c1,
                      const pt_set *mask, void *cbuf);

/* The copy-end descriptor's level (see done_fd). A failure can only be an eventfd counter at
 * its maximum, which still reads as "ended", or an empty one drained: both mean what they should. */
static inline void pt_done_clear(pt_set *s)
{
    eventfd_t v;
    (void)eventfd_read(s->done_fd, &v);   /* EAGAIN: it was not readable */
}
static inline void pt_done_signal(pt_set *s)
{
    (void)eventfd_write(s->done_fd, 1);
}

/* copier.c; caller holds ctl_mu, except for pt_copy_stop */
int pt_copier_spawn(pt_set *s, pt_error *err);         /* the thread for a recorded copy */
void pt_copier_reap(pt_set *s);                        /* joins a finished thread */
int pt_copy_start_locked(pt_set *s, pt_error *err);   /* resume after open */
void pt_copy_stop(pt_set *s);                          /* suspend for close */
/* setctl.c: an open set whose header records a suspended copy (no thread; copying stays) */
void pt_copy_hold(pt_set *s);
/* Caller holds ctl_mu, the copier thread runs: it ends as an abort; returns once it has */
void pt_copier_abort_locked(pt_set *s);
void pt_copy_end_held(pt_set *s);                      /* a held restore aborted */

/* set.c: the shared steps of enable and open. cfg NULL opens an existing set; imported: shadow
 * is NULL and master is the imported volume. */
typedef struct pt_open_args {
    const pt_volspec *master, *shadow, *bitmap;
    const pt_set_config *cfg;
    pt_overflow *ov;
    bool imported;
} pt_open_args;
int pt_set_setup(pt_engine *eng, const pt_open_args *a, pt_set **out, pt_error *err);

/* Imported sets (kind PT_IMPORTED; imported.c): the rules the data path and copies follow.
 * 0 for any other kind; PT_E_WRONG_KIND naming what (e.g. "copied") for an imported set. */
static inline int pt_import_refuse(const pt_set *s, const char *what, pt_error *err)
{
    if (s->kind != PT_IMPORTED)
        return 0;
    return pt_fail(err, PT_E_WRONG_KIND, "%s is an imported shadow: it cannot be %s here (it "
                   "has no master on this host); release it and join it on the host that "
                   "exported it", s->name, what);
}
/* An imported set's I/O side: PT_SHADOW is its volume (held as the engine's master), PT_MASTER
 * is refused, and so is any I/O once it is released. */
static inline int pt_import_side(pt_set *s, int *side, pt_error *err)
{
    if (atomic_load(&s->retired))
        return pt_fail(err, PT_E_CLOSED, "the imported shadow %s is released", s->name);
    if (*side == PT_MASTER)
        return pt_fail(err, PT_E_WRONG_KIND, "%s is an imported shadow: it has no master on "
                       "this host; read and write its shadow", s->name);
    if (*side == PT_SHADOW)
        *side = PT_MASTER;
    return 0;
}
/* An exported shadow (PT_F_EXPORTED) is another host's until it is joined back. */
static inline int pt_export_refuse(pt_set *s, const char *what, pt_error *err)
{
    if (!(atomic_load(&s->rflags) & PT_F_EXPORTED))
        return 0;
    return pt_fail(err, PT_E_WRONG_KIND, "the shadow of set %s is exported to another host: "
                   "it cannot be %s here until it is joined back", s->name, what);
}
/* imported.c: a volume imported here is no other set's master, an imported set has its volume
 * alone, and a new import does not overwrite a released bitmap not yet joined; caller holds
 * eng->mu, s->m found, the volumes checked. */
int pt_import_check(pt_set *s, const pt_open_args *a, pt_error *err);

/* copy.c: a point in time in three steps, which a group hold (group_hold.c) spreads over calls
 * and its holder thread. pt_freeze_locked (every set's ctl_mu held) checks, precommits and
 * takes the gates; pt_freeze_end (gates held, ctl_mu not needed) takes the point in time
 * (commit) or not and releases the gates; pt_freeze_start_locked (ctl_mu held) starts the
 * committed copies and frees the rest. */
struct pt_flush_job;
typedef struct pt_freeze {
    pt_set **sets;          /* sorted, n of them */
    int n, dir, full;
    pt_master *ms[PT_MAX_SIBLINGS * 4];
    int nm;
    struct pt_flush_job *jobs;
    uint32_t *saved;
    uint64_t t0, frozen_ns;
    bool empty, committed;
} pt_freeze;
int pt_freeze_locked(pt_freeze *f, int64_t owner, bool checked, pt_error *err);
int pt_freeze_end(pt_freeze *f, int commit, pt_error *err);
int pt_freeze_start_locked(pt_freeze *f, pt_error *err);
/* The three steps at once (copies, updates, reset.c's resync). Caller holds every set's
 * ctl_mu; checked: check_can_copy passed already. */
int pt_start_locked(pt_set **sets, int n, int dir, int full, int64_t owner, bool checked,
                    uint64_t *frozen_ns, pt_error *err);
/* A group's sets, checked (count, direction, no duplicates, masters), sorted, malloc'ed. */
int pt_group_sets(pt_set *const *in, int n, int dir, pt_set ***out, pt_error *err);
void pt_sets_lock(pt_set **sets, int n);     /* ctl_mu of every set, in order */
void pt_sets_unlock(pt_set **sets, int n);

/* copy_record.c: what each step of a freeze records in its sets, for copy.c. A dependent set
 * updated from its master gets a new point in time (PT_A_NEW_PIT: its shadow bitmap is emptied,
 * nothing is copied); every other set copies (PT_A_COPY). */
enum pt_action { PT_A_COPY, PT_A_NEW_PIT };
enum pt_action pt_copy_plan(const pt_set *s, int dir);
int pt_freeze_alloc(pt_freeze *f);        /* f->jobs and f->saved for f->n sets; -ENOMEM */
void pt_freeze_free(pt_freeze *f);
/* Before the gates: the copy bits known now set on every set that copies, flushed in parallel
 * (a failure shows again in phase 1). */
void pt_precommit_all(pt_freeze *f);
/* Gates held: phase 1 (the commit point); on a failure every set is rolled back, the first
 * failure reported. */
int pt_phase1_all(pt_freeze *f, pt_error *err);
void pt_drop_precommit_all(pt_freeze *f);   /* gates held: no point in time after all */
void pt_phase2_all(pt_freeze *f);           /* gates held, phase 1 durable: shadow bits go */
void pt_flush_sets(pt_freeze *f);           /* every set's bitmap, in parallel */
/* An update with nothing to do on s (caller holds ctl_mu); every set's copy reported empty. */
bool pt_nothing_to_do(pt_set *s, int dir);
void pt_report_empty(pt_set **sets, int n);
/* group_hold.c: a hold on s ends now, thawed unchanged (close, disable). Caller holds no
 * ctl_mu. */
void pt_hold_drop_set(pt_set *s);

#endif
