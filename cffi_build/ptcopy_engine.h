/*
 * ptcopy engine: point-in-time copy sets (master + shadow + bitmap volume).
 *
 * The contract:
 *  - Every function returns 0 or a negative code: -errno for system errors, -PT_E_* for ptcopy's
 *    own vocabulary. When a pt_error is passed, it receives the code and a message that names the
 *    volume and the problem. Nothing is half-changed when a call fails.
 *  - All functions are thread safe. I/O calls may run concurrently from many threads; control
 *    calls (copy, update, abort, attach, close) serialise against each other per set.
 *  - The engine owns everything it opens. pt_engine_free() closes every set and overflow volume.
 *  - No callbacks: long work runs on engine threads; callers poll pt_set_progress(), or watch
 *    pt_set_done_fd() for the end of a copy.
 *
 * The data paths' servers have headers of their own on top of this one: ptcopy_fuse.h (the
 * userspace path's FUSE server) and ptcopy_dm.h (the kernel path's device-mapper calls).
 */
#ifndef PTCOPY_ENGINE_H
#define PTCOPY_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define PT_CHUNK_DEFAULT 32768u
#define PT_CHUNK_MIN 4096u
#define PT_CHUNK_MAX 1048576u

enum pt_kind { PT_INDEPENDENT = 0, PT_DEPENDENT = 1, PT_IMPORTED = 2 };
enum pt_side { PT_MASTER = 0, PT_SHADOW = 1 };
enum pt_dir { PT_TO_SHADOW = 0, PT_TO_MASTER = 1 };
enum pt_volrole { PT_VOL_MASTER = 0, PT_VOL_SHADOW = 1, PT_VOL_BITMAP = 2, PT_VOL_OVERFLOW = 3 };
enum pt_bitmap_which { PT_BITS_SHADOW = 0, PT_BITS_COPY = 1 };

/* ptcopy's error vocabulary (returned negated). System errors are returned as -errno. */
enum pt_errcode {
    PT_E_INVALID = 1001,       /* an argument is out of range or malformed */
    PT_E_TOO_SMALL = 1002,     /* a volume is smaller than needed */
    PT_E_BAD_HEADER = 1003,    /* bitmap/overflow header corrupted or foreign */
    PT_E_SIZE_MISMATCH = 1004, /* volume size differs from what the header records */
    PT_E_IN_USE = 1005,        /* volume already used, or set locked by another owner */
    PT_E_COPY_IN_PROGRESS = 1006,
    PT_E_WRONG_KIND = 1007,    /* operation not valid for this kind of set */
    PT_E_DEPENDENCY = 1008,    /* something still depends on it */
    PT_E_OFFLINE = 1009,       /* a volume is offline */
    PT_E_OUT_OF_SPACE = 1010,  /* a compact shadow lost point-in-time chunks */
    PT_E_SAME_VOLUME = 1011,   /* two roles given the same volume */
    PT_E_NOT_LOCKED = 1012,
    PT_E_INCOMPLETE = 1013,    /* target left incomplete by an aborted copy */
    PT_E_IO = 1014,            /* an I/O error took a volume offline */
    PT_E_TIMEOUT = 1015,
    PT_E_ALREADY = 1016,
    PT_E_NOT_FOUND = 1017,
    PT_E_NO_COPY = 1018,       /* abort/wait with no copy running */
    PT_E_CLOSED = 1019         /* the set or overflow volume is being closed or disabled */
};

/* Set flags reported by pt_set_status(). */
#define PT_F_COPYING 0x0001u
#define PT_F_TO_MASTER 0x0002u /* copying to the master, or an INCOMPLETE copy was */
#define PT_F_ABORT_REQUESTED 0x0004u
#define PT_F_COMPACT 0x0008u
#define PT_F_OUT_OF_SPACE 0x0010u
#define PT_F_SPILLED 0x0020u
#define PT_F_MASTER_OFFLINE 0x0040u
#define PT_F_SHADOW_OFFLINE 0x0080u
#define PT_F_BITMAP_OFFLINE 0x0100u
#define PT_F_OVERFLOW_OFFLINE 0x0200u
#define PT_F_RECOVERED 0x0400u /* opened after an unclean stop */
#define PT_F_INCOMPLETE 0x0800u /* a copy was aborted: the target is not yet the point in time */
/* Opened after a crash left the bitmap lost (its fallback record said so): the bits cannot be
 * trusted, so every chunk counts as changed and a reset makes the full copy. Until the reset. */
#define PT_F_BITMAP_LOST 0x1000u
/* The bitmap is offline and its fallback record could not be written (or none was given):
 * master writes were acknowledged whose change is recorded only in memory. A crash now would
 * lose them; the next open cannot know. Cleared when the bitmap is written whole again. */
#define PT_F_UNRECORDED 0x2000u
/* The copy was suspended (pt_set_suspend): its copy bits stay, copy-on-demand and the read
 * redirections still hold, no thread moves chunks until pt_set_resume. Survives a close. */
#define PT_F_SUSPENDED 0x4000u
/* A restore (copy to the master) that has other sets on its master was interrupted (a crash or
 * a close) and is held since this open: the master already reads as the restored image, but no
 * chunk moves until pt_set_copy to the master resumes it, so every other set of the master can
 * be opened first and keep its point in time. */
#define PT_F_RESTORE_HELD 0x8000u

typedef struct pt_error {
    int code;
    char msg[512];
} pt_error;

typedef struct pt_engine pt_engine;
typedef struct pt_set pt_set;
typedef struct pt_overflow pt_overflow;

/* A volume: a path (always, used in messages and to open it when fd < 0) and an optional open
 * descriptor (dup'ed by the engine; the caller keeps its own). */
typedef struct pt_volspec {
    const char *path;
    int fd;
} pt_volspec;

typedef struct pt_set_config {
    int kind;                /* enum pt_kind */
    uint32_t chunk_size;     /* 0 = PT_CHUNK_DEFAULT */
    int bitmap_in_memory;    /* no bitmap volume: nothing survives a stop */
    uint8_t uuid[16];        /* all zero = generate */
    uint32_t copy_delay_ms;  /* throttle: pause this long ... */
    uint32_t copy_units;     /* ... after this many chunks (0 = default 256) */
} pt_set_config;

typedef struct pt_progress {
    int active;
    int direction;      /* enum pt_dir */
    int aborting;
    int result;         /* 0, or the error that ended the last copy */
    uint64_t chunks_done;
    uint64_t chunks_total;
    uint64_t bytes_done;
    uint64_t bytes_total;
    uint64_t rate;      /* bytes per second over the last copy's run */
    uint64_t elapsed_ns;
} pt_progress;

typedef struct pt_status {
    int kind;
    uint32_t flags;
    uint32_t chunk_size;
    uint32_t copy_delay_ms;
    uint32_t copy_units;
    uint64_t master_size;
    uint64_t shadow_size;
    uint64_t chunks;
    uint64_t diff_chunks;        /* shadow-bitmap bits set */
    uint64_t copy_chunks;        /* copy-bitmap bits set */
    uint64_t shadow_slots;       /* compact: chunk slots on the shadow volume; else = chunks */
    uint64_t shadow_slots_used;  /* compact: slots in use on the shadow */
    uint64_t overflow_used;      /* compact: chunks this set holds on its overflow volume */
    uint64_t lost_chunks;        /* compact: point-in-time chunks lost to out-of-space */
    uint64_t generation;
    uint64_t last_modified_ns;
    int64_t lock_owner;          /* 0 = not locked */
    uint64_t bitmap_size;
    uint8_t uuid[16];
    uint8_t overflow_uuid[16];
} pt_status;

typedef struct pt_ov_status {
    uint32_t chunk_size;
    int counters_valid;  /* 0 when opened after an unclean stop and not yet reconciled */
    int offline;
    int nsets;           /* sets attached (recorded in the overflow header) */
    uint64_t chunks_total;
    uint64_t chunks_used;
    uint8_t uuid[16];
} pt_ov_status;

/* ---- engine ---------------------------------------------------------------------------- */
pt_engine *pt_engine_new(void);
void pt_engine_free(pt_engine *eng);
/* Kernel data path: no copy ever starts on its own. Enabling an independent set marks every
 * chunk as differing instead of copying from the live master, and opening a set after an
 * interrupted copy folds the chunks left to copy back into its shadow bitmap (flag INCOMPLETE)
 * instead of resuming: the caller copies from a frozen snapshot. */
void pt_engine_defer_copies(pt_engine *eng, int on);

/* ---- bitmap volumes ---------------------------------------------------------------------- */
/* Bytes a bitmap volume needs for these volume sizes (compact when shadow < master). */
int pt_bitmap_size(uint64_t master_size, uint64_t shadow_size, uint32_t chunk_size,
                   int kind, uint64_t *out, pt_error *err);

/* ---- sets -------------------------------------------------------------------------------- */
/* Enable a new set: writes a fresh bitmap header (refuses a bitmap that is too small) and
 * starts the full copy of an independent set. ov may be NULL. */
int pt_set_enable(pt_engine *eng, const pt_volspec *master, const pt_volspec *shadow,
                  const pt_volspec *bitmap, const pt_set_config *cfg, pt_overflow *ov,
                  pt_set **out, pt_error *err);
/* Open an existing set from its bitmap volume (after a clean or unclean stop). An interrupted
 * copy resumes. ov must be the overflow volume the header names, when it names one. */
int pt_set_open(pt_engine *eng, const pt_volspec *master, const pt_volspec *shadow,
                const pt_volspec *bitmap, pt_overflow *ov, pt_set **out, pt_error *err);
/* Stop serving the set: suspends a running copy (it resumes on the next open), flushes,
 * marks the bitmap clean and frees the handle. */
int pt_set_close(pt_set *set, pt_error *err);
/* End the set: refused while a copy runs; invalidates the bitmap header so it cannot be
 * resumed by accident, releases overflow chunks, frees the handle. On failure the set stays
 * open and unchanged. */
int pt_set_disable(pt_set *set, pt_error *err);
/* The first half of pt_set_disable, with the handle still valid: refused while a copy runs;
 * writes the disabled header and gives the overflow chunks back. From then on copies, resets
 * and attachments fail with PT_E_CLOSED and no header write can make the set valid again;
 * status and I/O still work until pt_set_disable (or pt_set_close) frees the handle.
 * Idempotent. On failure the set stays open and usable. */
int pt_set_retire(pt_set *set, pt_error *err);
/* The handle is about to be freed: threads blocked in pt_set_wait return -PT_E_CLOSED now, and
 * later waits too. The caller still has to close or disable it (after the other calls on it have
 * returned: the engine does not count its callers). */
void pt_set_closing(pt_set *set);

/* I/O through the set. side: enum pt_side. The shadow's logical size is the master's. */
int pt_set_read(pt_set *set, int side, uint64_t offset, void *buf, size_t len, pt_error *err);
int pt_set_write(pt_set *set, int side, uint64_t offset, const void *buf, size_t len,
                 pt_error *err);
/* Make every completed write durable on master, shadow, overflow and bitmap. */
int pt_set_flush(pt_set *set, pt_error *err);
/* Make completed writes through one side (PT_MASTER or PT_SHADOW) durable, as a served file's
 * fsync does. The shadow side is pt_set_flush; the master syncs its own volume and never fails
 * because the shadow, bitmap or overflow volume is offline or fails (the set's flags say so). */
int pt_set_sync(pt_set *set, int side, pt_error *err);

/* Copy (full=1) or update (full=0) in a direction; returns at once, a C thread does the work.
 * owner: the caller's identity for the PID lock (0 = none). On a set flagged RESTORE_HELD, a
 * copy or update to the master resumes the held restore. */
int pt_set_copy(pt_set *set, int direction, int full, int64_t owner, pt_error *err);
int pt_set_abort(pt_set *set, pt_error *err);
/* Suspend the running copy: its thread stops after what is in flight, the copy keeps its copy
 * bits and its place (the set stays "copying": the target's missing chunks still come from the
 * source, a write still copies a chunk first), and the suspension is recorded in the header, so
 * a close and open keep it. PT_E_NO_COPY when no copy runs (or it ended first). */
int pt_set_suspend(pt_set *set, pt_error *err);
/* Resume a suspended copy where it stopped (abort=0), or end it as an abort would (abort=1:
 * what was not copied joins the shadow bitmap, the target is INCOMPLETE). PT_E_NO_COPY when
 * the set has no suspended copy. */
int pt_set_resume(pt_set *set, int abort, pt_error *err);
/* Wait for the running copy: 0 when none runs any more, -PT_E_TIMEOUT after timeout_ms
 * (negative = forever). Returns the copy's error if it failed. */
int pt_set_wait(pt_set *set, int timeout_ms, pt_error *err);
int pt_set_progress(pt_set *set, pt_progress *out);
/* A descriptor an event loop can watch for the end of copies (an eventfd, owned by the set and
 * closed with it; close-on-exec, non-blocking). It is readable exactly while no copy thread
 * runs: a copy's start makes it unreadable, its end (done, aborted, failed or suspended by a
 * close) readable again, after pt_set_progress reports it inactive. Level, not edge: watch it
 * (poll, epoll), never read or write it, so any number of watchers see the same thing; dup it
 * to keep watching past the set's close. A copy or update with nothing to move may start no
 * thread: it stays readable. */
int pt_set_done_fd(pt_set *set);
int pt_set_set_params(pt_set *set, uint32_t delay_ms, uint32_t units, pt_error *err);
int pt_set_status(pt_set *set, pt_status *out);
/* Copy out one of the set's bitmaps (1 bit per chunk, LSB first); len >= (chunks+7)/8. */
int pt_set_get_bits(pt_set *set, int which, uint8_t *out, size_t len, pt_error *err);

/* PID lock: while held, copy/update by any other owner fail with PT_E_IN_USE. */
int pt_set_lock(pt_set *set, int64_t owner, pt_error *err);
int pt_set_unlock(pt_set *set, int64_t owner, pt_error *err);

/* Bring offline volumes back and start the resync they need. */
int pt_set_reset(pt_set *set, int64_t owner, pt_error *err);

int pt_set_attach_overflow(pt_set *set, pt_overflow *ov, pt_error *err);
int pt_set_detach_overflow(pt_set *set, pt_error *err);

/* The set's fallback record: a small file outside the bitmap volume (the caller's descriptor of
 * a root-only regular file, dup'ed by the engine; one file per set). When the bitmap volume goes
 * offline, the first master write that needs a new bit makes the record say "bitmap lost" for
 * this set's UUID (written and fdatasync'ed) before that write is issued, so a crash can never
 * leave a changed chunk recorded nowhere. Reads the record first: if it says the bitmap was lost
 * (or is unreadable garbage), the set comes back as after a close with a volume offline: every
 * chunk is marked changed (independent sets), the shadow is offline until a reset, which makes
 * the full copy (flag BITMAP_LOST); that is made durable in the bitmap, then the record is
 * cleared. *recovered (may be NULL) = 1 then. Call it right after enable or open, before the
 * set is served. A new call replaces the descriptor. */
int pt_set_fallback(pt_set *set, int fd, int *recovered, pt_error *err);

/* Fault injection for tests (like dm-flakey): make every I/O to one of the set's volumes fail
 * with errno errnum (0: EIO; e.g. ENOSPC for a full disk) while on != 0. */
int pt_set_inject_error(pt_set *set, int volume, int on, int errnum, pt_error *err);
/* Join: OR the shadow bitmap kept by another host for this set's exported shadow into this
 * set's shadow bitmap (same chunk size and count), so the next update resyncs those chunks. */
int pt_set_join(pt_set *set, const pt_volspec *bitmap, pt_error *err);

/* ---- imported shadows: a shadow another host exported, served here with a bitmap of every
 * chunk written here (kind PT_IMPORTED). The set has one volume, read and written through the
 * PT_SHADOW side (PT_MASTER is refused); each write's bit is durable in the bitmap before the
 * write is issued, as a master write's bit is. Copies, updates, resets, overflow volumes and
 * joins are refused (PT_E_WRONG_KIND). ---- */
/* Import volume with a new bitmap (chunk_size 0 = PT_CHUNK_DEFAULT); the volume's size gives
 * the chunk count, which must match the exporting set's for its join to take the bitmap. */
int pt_import_create(pt_engine *eng, const pt_volspec *volume, const pt_volspec *bitmap,
                     uint32_t chunk_size, pt_set **out, pt_error *err);
/* Open an imported set again from its bitmap (after a stop or a crash). */
int pt_import_open(pt_engine *eng, const pt_volspec *volume, const pt_volspec *bitmap,
                   pt_set **out, pt_error *err);
/* Release an imported set, with the handle still valid: from here on its I/O is refused
 * (PT_E_CLOSED), the volume and the bitmap are flushed and the bitmap header says "released"
 * for good (join accepts it; no open does). pt_set_close then frees the handle. Idempotent. On
 * failure the set stays open and usable. */
int pt_import_release(pt_set *set, pt_error *err);
/* Status flag: the shadow is exported to another host (pt_set_export): its I/O, copies and
 * resets are refused until pt_set_join takes it back. Survives a close (a header flag). */
#define PT_F_EXPORTED 0x10000u
/* Export an independent set's shadow to another host: refused unless the shadow holds its
 * point in time whole (no copy running or suspended, none left incomplete, no volume offline).
 * From then on the shadow's I/O, every copy, update and reset of the set are refused; master
 * writes go on and are tracked. Recorded in the header (durable on return); idempotent.
 * pt_set_join ends it. */
int pt_set_export(pt_set *set, pt_error *err);

/* ---- hooks for the kernel data path (device-mapper does the I/O; the engine keeps the
 * bitmaps and moves the chunks) ---- */
/* Chunks [first, first+count) changed outside the engine (dm-era saw writes): they join the
 * shadow bitmap, durably before this returns. */
int pt_set_mark(pt_set *set, uint64_t first, uint64_t count, pt_error *err);
/* Copies read their source side from src (a frozen snapshot of the live volume, same size)
 * instead of the live volume; src NULL goes back to the live one. Refused while a copy runs. */
int pt_set_copy_source(pt_set *set, const pt_volspec *src, pt_error *err);
/* Copies to the master (restores) write it through dst (a device stacked on the master volume,
 * at least as large: device-mapper's origin and era devices, so the other sets' snapshots copy
 * on write and their eras see the change) instead of the raw volume, and leave the other sets
 * of the master to that device (no sibling work in the engine). dst NULL goes back to the raw
 * volume. Refused while a copy runs, and for a compact set (its chunks are not in place). */
int pt_set_copy_target(pt_set *set, const pt_volspec *dst, pt_error *err);

/* One point in time across several sets: freezes writes on all, checks every set can take
 * part (all or nothing), adjusts every bitmap, unfreezes and starts the copies.
 * frozen_ns receives how long writes were held. */
int pt_group_copy(pt_set *const *sets, int nsets, int direction, int full, int64_t owner,
                  uint64_t *frozen_ns, pt_error *err);

/* The same point in time in two calls, for a coordinator that freezes several hosts before it
 * takes any point in time. pt_group_hold freezes writes on every set's master, checks every set
 * can take part (all or nothing, as pt_group_copy) and returns with writes still frozen;
 * pt_group_release then takes the point in time (commit=1: the hold's instant; bitmaps adjusted,
 * copies started) or not (commit=0: nothing changed) and thaws, and frees the hold (once, always).
 * A hold not released within timeout_ms (1..600000) is thawed unchanged by the engine; so is one
 * whose set is closed meanwhile (pt_set_retire refuses while held). A release after that returns
 * PT_E_TIMEOUT (or PT_E_CLOSED) and changes nothing. While held, copies, resets and other holds
 * of the sets are refused (PT_E_IN_USE). frozen_ns (may be NULL): how long writes were held. */
typedef struct pt_hold pt_hold;
int pt_group_hold(pt_set *const *sets, int nsets, int direction, int full, int64_t owner,
                  int timeout_ms, pt_hold **out, pt_error *err);
int pt_group_release(pt_hold *hold, int commit, uint64_t *frozen_ns, pt_error *err);

/* ---- overflow volumes --------------------------------------------------------------------- */
int pt_overflow_init(pt_engine *eng, const pt_volspec *vol, uint32_t chunk_size,
                     pt_overflow **out, pt_error *err);
int pt_overflow_open(pt_engine *eng, const pt_volspec *vol, pt_overflow **out, pt_error *err);
/* Refused while open sets use it. */
int pt_overflow_close(pt_overflow *ov, pt_error *err);
/* Refused while any set is attached; wipes the header and frees the handle. */
int pt_overflow_delete(pt_overflow *ov, pt_error *err);
/* The check half of close (wipe = 0) or delete (wipe = 1, also wipes the header) with the handle
 * still valid: refused while open sets use it (delete: while any set is attached); once it
 * succeeds no set can open with or attach the volume (PT_E_CLOSED), and pt_overflow_close or
 * pt_overflow_delete then frees it without being refused. Idempotent. */
int pt_overflow_retire(pt_overflow *ov, int wipe, pt_error *err);
int pt_overflow_status(pt_overflow *ov, pt_ov_status *out);
/* The uuid of the i-th attached set, 0 <= i < nsets. */
int pt_overflow_set_uuid(pt_overflow *ov, int i, uint8_t *out16);

#endif
