/* Calls on an open set besides I/O (io.c) and copies (copy.c): status, parameters, locks,
 * fault injection, overflow attachment, join, the fallback record, kernel-path hooks.
 *
 * Top layer (see the layering in internal.h), beside set.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- observation and parameters ---- */

int pt_set_status(pt_set *s, pt_status *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&s->meta_mu);
    o->kind = s->kind;
    o->chunk_size = s->chunk;
    o->master_size = s->master_size;
    o->shadow_size = s->shadow_size;
    o->chunks = s->nchunks;
    o->diff_chunks = s->D.count;
    o->copy_chunks = s->C.count;
    o->shadow_slots = s->shadow_slots;
    o->shadow_slots_used = s->compact ? s->slots_used : s->D.count;
    o->overflow_used = s->ov_used;
    o->lost_chunks = s->lost;
    o->generation = s->generation;
    o->last_modified_ns = s->last_modified;
    o->bitmap_size = s->bitmap_mem ? 0 : s->total_size;
    memcpy(o->uuid, s->uuid, 16);
    memcpy(o->overflow_uuid, s->ov_uuid, 16);
    uint32_t pf = s->pflags;
    pthread_mutex_unlock(&s->meta_mu);
    /* not under ctl_mu: a reset or copy start holds it across I/O (see internal.h) */
    o->lock_owner = PT_LOAD(s->lock_owner);
    uint32_t f = atomic_load(&s->rflags);
    if (PT_LOAD(s->copying)) {
        f |= PT_F_COPYING;
        if (PT_LOAD(s->dir) == PT_TO_MASTER)
            f |= PT_F_TO_MASTER;
        if (atomic_load(&s->abort_req))
            f |= PT_F_ABORT_REQUESTED;
        if (PT_LOAD(s->held))
            f |= PT_F_RESTORE_HELD;
    }
    if (s->compact)
        f |= PT_F_COMPACT;
    if (pf & PT_PF_OUT_OF_SPACE)
        f |= PT_F_OUT_OF_SPACE;
    if (pf & PT_PF_SPILLED)
        f |= PT_F_SPILLED;
    if (pf & PT_PF_INCOMPLETE)   /* and which side the unfinished copy was writing */
        f |= PT_F_INCOMPLETE | ((pf & PT_PF_TO_MASTER) ? PT_F_TO_MASTER : 0);
    if ((pf & PT_PF_SUSPENDED) && PT_LOAD(s->copying))
        f |= PT_F_SUSPENDED;
    if (!(pf & PT_PF_NEED_RESYNC))   /* a reset ended what the lost bitmap asked for */
        f &= ~PT_F_BITMAP_LOST;
    o->flags = f;
    o->copy_delay_ms = atomic_load(&s->delay_ms);
    o->copy_units = atomic_load(&s->units);
    return 0;
}

int pt_set_done_fd(pt_set *s)
{
    return s->done_fd;
}

int pt_set_get_bits(pt_set *s, int which, uint8_t *out, size_t len, pt_error *err)
{
    if (which != PT_BITS_SHADOW && which != PT_BITS_COPY)
        return pt_fail(err, PT_E_INVALID, "no bitmap %d: use shadow (0) or copy (1)", which);
    size_t need = (size_t)((s->nchunks + 7) / 8);
    if (len < need)
        return pt_fail(err, PT_E_INVALID, "buffer of %zu bytes is too small for %zu", len, need);
    pthread_mutex_lock(&s->meta_mu);
    memcpy(out, which == PT_BITS_SHADOW ? (void *)s->D.w : (void *)s->C.w, need);
    pthread_mutex_unlock(&s->meta_mu);
    return 0;
}

int pt_set_set_params(pt_set *s, uint32_t delay_ms, uint32_t units, pt_error *err)
{
    if (units == 0 || units > PT_UNITS_MAX)
        return pt_fail(err, PT_E_INVALID, "copy units must be between 1 and %u chunks",
                       PT_UNITS_MAX);
    if (delay_ms > PT_DELAY_MAX)
        return pt_fail(err, PT_E_INVALID, "copy delay must be at most %u ms", PT_DELAY_MAX);
    atomic_store(&s->delay_ms, delay_ms);
    atomic_store(&s->units, units);
    pthread_mutex_lock(&s->meta_mu);
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    int rc = pt_meta_flush(s);
    if (rc)
        return pt_fail(err, -rc, "bitmap volume %s: cannot record the parameters: %s",
                       s->bitmap.path, strerror(-rc));
    return 0;
}

int pt_set_lock(pt_set *s, int64_t owner, pt_error *err)
{
    if (owner == 0)
        return pt_fail(err, PT_E_INVALID, "a lock needs an owner");
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (s->lock_owner && s->lock_owner != owner)
        rc = pt_fail(err, PT_E_IN_USE, "set %s is locked by %lld", s->name,
                     (long long)s->lock_owner);
    else
        PT_STORE(s->lock_owner, owner);
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_unlock(pt_set *s, int64_t owner, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (!s->lock_owner)
        rc = pt_fail(err, PT_E_NOT_LOCKED, "set %s is not locked", s->name);
    else if (owner && s->lock_owner != owner)
        rc = pt_fail(err, PT_E_IN_USE, "set %s is locked by %lld, not %lld", s->name,
                     (long long)s->lock_owner, (long long)owner);
    else
        PT_STORE(s->lock_owner, (int64_t)0);
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_inject_error(pt_set *s, int volume, int on, int errnum, pt_error *err)
{
    if (errnum < 0 || errnum > 4095)
        return pt_fail(err, PT_E_INVALID, "%d is not an errno to inject", errnum);
    pt_vol *v = volume == PT_VOL_MASTER ? &s->m->vol
              : volume == PT_VOL_SHADOW ? &s->shadow
              : volume == PT_VOL_BITMAP ? &s->bitmap
              : volume == PT_VOL_OVERFLOW && s->ov ? &s->ov->vol : NULL;
    if (!v)
        return pt_fail(err, PT_E_INVALID, "set %s has no volume %d", s->name, volume);
    atomic_store(&v->inject, on ? (errnum ? errnum : EIO) : 0);
    return 0;
}

/* ---- overflow attachment ---- */

int pt_set_attach_overflow(pt_set *s, pt_overflow *ov, pt_error *err)
{
    if (!s->compact)
        return pt_fail(err, PT_E_WRONG_KIND,
                       "set %s is not a compact dependent set; only those use overflow volumes",
                       s->name);
    if (ov->chunk != s->chunk)
        return pt_fail(err, PT_E_INVALID, "overflow volume %s has %u-byte chunks; set %s uses %u",
                       ov->vol.path, ov->chunk, s->name, s->chunk);
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (atomic_load(&s->retired)) {
        rc = pt_fail(err, PT_E_CLOSED, "set %s is being disabled", s->name);
        goto out_unlock;
    }
    if (s->ov == ov)
        goto out_unlock;   /* already attached: nothing to do */
    if (s->ov || !pt_uuid_is_zero(s->ov_uuid)) {
        rc = pt_fail(err, PT_E_IN_USE, "set %s already has an overflow volume", s->name);
        goto out_unlock;
    }
    rc = pt_ov_hold(ov, err);   /* refused while the overflow volume is being closed or deleted */
    if (rc)
        goto out_unlock;
    rc = pt_ov_add_set(ov, s->uuid, err);
    if (rc)
        goto out_drop_hold;
    pthread_rwlock_wrlock(&s->m->gate);
    pthread_mutex_lock(&s->meta_mu);
    memcpy(s->ov_uuid, ov->uuid, 16);
    pthread_mutex_unlock(&s->meta_mu);
    rc = pt_meta_write_header(s, PT_STATE_DIRTY, err);
    if (rc)
        goto out_forget;
    s->ov = ov;
    pt_ov_set_opened(ov, s);
    pthread_rwlock_unlock(&s->m->gate);
    pthread_mutex_unlock(&s->ctl_mu);
    return 0;

out_forget:
    pthread_mutex_lock(&s->meta_mu);
    memset(s->ov_uuid, 0, 16);
    pthread_mutex_unlock(&s->meta_mu);
    (void)pt_ov_remove_set(ov, s->uuid, NULL);   /* best effort: the cause is reported */
    pthread_rwlock_unlock(&s->m->gate);
out_drop_hold:
    pt_ov_set_closed(ov);
out_unlock:
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_detach_overflow(pt_set *s, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    pthread_rwlock_wrlock(&s->m->gate);
    int rc = 0;
    pt_overflow *ov = s->ov;
    pthread_mutex_lock(&s->meta_mu);
    uint64_t used = s->ov_used;
    uint8_t saved[16];
    memcpy(saved, s->ov_uuid, 16);
    if (!ov)
        rc = pt_fail(err, PT_E_NOT_FOUND, "set %s has no overflow volume attached", s->name);
    else if (used)
        rc = pt_fail(err, PT_E_DEPENDENCY,
                     "%llu chunk(s) of set %s live on overflow volume %s; update the shadow "
                     "or disable the set first",
                     (unsigned long long)used, s->name, ov->vol.path);
    else
        memset(s->ov_uuid, 0, 16);
    pthread_mutex_unlock(&s->meta_mu);
    if (rc)
        goto out_unlock;
    rc = pt_meta_write_header(s, PT_STATE_DIRTY, err);
    if (rc)
        goto out_restore;
    /* slots still waiting for a durable release go back before the handle is dropped; a
     * failure leaks them on the overflow volume, which is safe (and took the bitmap offline) */
    (void)pt_meta_flush(s);
    s->ov = NULL;
    pt_ov_set_closed(ov);
    /* the set's header no longer names it: a stale entry left in the overflow's header only
     * blocks the overflow's deletion (the message says why) */
    (void)pt_ov_remove_set(ov, s->uuid, err);
    goto out_unlock;

out_restore:
    pthread_mutex_lock(&s->meta_mu);
    memcpy(s->ov_uuid, saved, 16);
    pthread_mutex_unlock(&s->meta_mu);
out_unlock:
    pthread_rwlock_unlock(&s->m->gate);
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

/* ---- join: merge the shadow bitmap another host kept for this set's exported shadow ---- */

int pt_set_join(pt_set *s, const pt_volspec *bitmap, pt_error *err)
{
    int rc = pt_import_refuse(s, "joined into", err);
    if (rc)
        return rc;
    pt_set *o = calloc(1, sizeof *o);
    if (!o)
        return pt_fail(err, ENOMEM, "out of memory");
    o->shadow.fd = -1;
    rc = pt_vol_open(&o->bitmap, bitmap, "joined bitmap", err);
    if (rc)
        goto out_free;
    rc = pt_meta_load_mode(o, PT_LOAD_JOIN, s->master_size, s->shadow_size, err);
    if (rc)
        goto out_close;
    /* an imported shadow larger than the master (an independent shadow may be): its chunks
     * past the master's are no chunk of the set */
    bool wider = o->kind == PT_IMPORTED && o->nchunks > s->nchunks;
    if (o->chunk != s->chunk || (o->nchunks != s->nchunks && !wider)) {
        rc = pt_fail(err, PT_E_SIZE_MISMATCH, "bitmap %s maps %llu chunks of %u bytes; set %s "
                     "has %llu of %u", o->bitmap.path, (unsigned long long)o->nchunks, o->chunk,
                     s->name, (unsigned long long)s->nchunks, s->chunk);
        goto out_close;
    }
    pthread_rwlock_wrlock(&s->m->gate);
    pthread_mutex_lock(&s->meta_mu);
    if (!wider)
        pt_bits_or(&s->D, &o->D, pt_image_mark, &s->img);
    for (uint64_t c = pt_bits_next(&o->D, 0); wider && c < s->nchunks;
         c = pt_bits_next(&o->D, c + 1))
        pt_set_D(s, c);
    if (s->pflags & PT_PF_EXPORTED) {   /* the shadow is back, with its bits, in one flush */
        s->pflags &= ~PT_PF_EXPORTED;
        s->hdr_dirty = true;
    }
    pthread_mutex_unlock(&s->meta_mu);
    pthread_rwlock_unlock(&s->m->gate);
    int r = pt_meta_flush(s);
    if (r)
        rc = pt_fail(err, -r, "bitmap volume %s: cannot record the joined bits: %s",
                     s->bitmap.path, strerror(-r));
    else
        atomic_fetch_and(&s->rflags, ~PT_F_EXPORTED);
    /* the other host's bits are durable here: its bitmap is used up (a failure leaves it
     * joinable again, which only marks the same chunks twice) */
    if (!rc && o->kind == PT_IMPORTED)
        (void)pt_meta_mark_joined(o);
out_close:
    pt_meta_free(o);
    pt_vol_close(&o->bitmap);
out_free:
    free(o);
    return rc;
}

/* ---- suspend and resume (the copier keeps the set copying when suspend_req is set) ---- */

static bool suspended_locked(pt_set *s)
{
    pthread_mutex_lock(&s->meta_mu);
    bool r = (s->pflags & PT_PF_SUSPENDED) != 0;
    pthread_mutex_unlock(&s->meta_mu);
    return r && PT_LOAD(s->copying) && !s->thr_live;
}

void pt_copy_hold(pt_set *s)
{
    pthread_rwlock_wrlock(&s->m->gate);
    PT_STORE(s->dir, (s->pflags & PT_PF_TO_MASTER) ? PT_TO_MASTER : PT_TO_SHADOW);
    PT_STORE(s->copying, true);
    pthread_rwlock_unlock(&s->m->gate);
    /* the place survives, not the first total: progress counts from the open */
    atomic_store(&s->total, s->C.count);
    atomic_store(&s->left_end, s->C.count);
}

int pt_set_suspend(pt_set *s, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    pt_copier_reap(s);
    int rc = 0;
    if (suspended_locked(s)) {
        rc = pt_fail(err, PT_E_ALREADY, "the copy of set %s is suspended already", s->name);
        goto out_unlock;
    }
    if (!s->thr_live) {
        rc = pt_fail(err, PT_E_NO_COPY, "set %s has no copy running to suspend", s->name);
        goto out_unlock;
    }
    if (atomic_load(&s->abort_req)) {
        rc = pt_fail(err, PT_E_NO_COPY, "the copy of set %s is being aborted", s->name);
        goto out_unlock;
    }
    atomic_store(&s->suspend_req, 1);
    atomic_store(&s->stop_req, 1);
    pthread_cond_broadcast(&s->ctl_cv);   /* wakes a throttle pause */
    while (!s->thr_done)
        pthread_cond_wait(&s->ctl_cv, &s->ctl_mu);
    pt_copier_reap(s);
    atomic_store(&s->stop_req, 0);
    atomic_store(&s->suspend_req, 0);
    if (!suspended_locked(s)) {
        int r = atomic_load(&s->result);
        rc = r ? pt_fail(err, r, "the copy of set %s failed before it could be suspended",
                         s->name)
               : pt_fail(err, PT_E_NO_COPY, "the copy of set %s ended before it could be "
                         "suspended", s->name);
    }
out_unlock:
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_resume(pt_set *s, int abort, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    pt_copier_reap(s);
    int rc = 0;
    if (!suspended_locked(s)) {
        rc = pt_fail(err, PT_E_NO_COPY, "set %s has no suspended copy", s->name);
        goto out_unlock;
    }
    if (atomic_load(&s->retired) || atomic_load(&s->closing)) {
        rc = pt_fail(err, PT_E_CLOSED, "set %s is being closed or disabled", s->name);
        goto out_unlock;
    }
    uint64_t total = atomic_load(&s->total);
    uint64_t ran = atomic_load(&s->end_ns) - atomic_load(&s->start_ns);
    pthread_mutex_lock(&s->meta_mu);
    s->pflags &= ~PT_PF_SUSPENDED;   /* durable with the copy's first flush; a crash before
                                      * it leaves the copy suspended, nothing lost */
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    rc = pt_copier_spawn(s, err);
    if (rc) {
        pthread_mutex_lock(&s->meta_mu);
        s->pflags |= PT_PF_SUSPENDED;
        pthread_mutex_unlock(&s->meta_mu);
        goto out_unlock;
    }
    /* progress goes on from where it was, not from zero: the first total, and a start as if
     * the copy had run all along without the pause */
    atomic_store(&s->total, total);
    if (ran < pt_now_ns())
        atomic_store(&s->start_ns, pt_now_ns() - ran);
    if (abort)   /* the thread ends at its first look, as an abort: finish() folds the bits */
        pt_copier_abort_locked(s);
out_unlock:
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

/* ---- the fallback record (fallback.c keeps it) ---- */

int pt_set_fallback(pt_set *s, int fd, int *recovered, pt_error *err)
{
    if (recovered)
        *recovered = 0;
    if (s->bitmap_mem)
        return pt_fail(err, PT_E_WRONG_KIND, "set %s keeps its bitmaps in memory: nothing of it "
                       "survives a stop, so it has no fallback record", s->name);
    bool lost;
    int rc = pt_fb_adopt(s, fd, &lost, err);
    if (rc || !lost)
        return rc;
    /* The set comes back as a close with its bitmap offline leaves it: the bits missed writes,
     * and copy-on-write (dependent) or copy-on-demand skipped chunks while the shadow side was
     * offline, so only a reset (a full copy, or a new point in time) makes the shadow right. */
    pthread_mutex_lock(&s->meta_mu);
    if (s->kind == PT_INDEPENDENT)
        pt_bits_fill(&s->D, pt_image_mark, &s->img);
    s->pflags |= PT_PF_NEED_RESYNC;
    s->generation++;
    pthread_mutex_unlock(&s->meta_mu);
    atomic_fetch_or(&s->rflags, PT_F_BITMAP_LOST);
    if (recovered)
        *recovered = 1;
    /* Whole, whatever the offline flags say; its success clears the record (meta_flush_fn). */
    rc = pt_meta_rewrite(s);
    /* offline first: a restore the open resumed takes the half-restored master with it */
    pt_set_offline(s, rc ? PT_F_BITMAP_OFFLINE : PT_F_SHADOW_OFFLINE);
    /* A copy the open resumed would only fail on the offline shadow; stopped now (resumable
     * as at a close), it does not make the reset wait for it. */
    pt_copy_stop(s);
    return 0;   /* still failing: the record stays, the flags say bitmap-offline */
}

/* ---- hooks for the kernel data path ---- */

int pt_set_mark(pt_set *s, uint64_t first, uint64_t count, pt_error *err)
{
    if (first > s->nchunks || count > s->nchunks - first)
        return pt_fail(err, PT_E_INVALID, "set %s: chunks %llu+%llu are outside its %llu chunks",
                       s->name, (unsigned long long)first, (unsigned long long)count,
                       (unsigned long long)s->nchunks);
    if (!count)
        return 0;
    pthread_mutex_lock(&s->meta_mu);
    for (uint64_t c = first; c < first + count; c++)
        pt_set_D(s, c);
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    int rc = pt_meta_flush(s);
    if (rc) {
        /* the chunks changed already: the record keeps a crash from losing them (a failure to
         * write it shows as the set's UNRECORDED flag) */
        (void)pt_fb_lost(s);
        return pt_fail(err, -rc, "bitmap volume %s of set %s: cannot record changed chunks: %s",
                       s->bitmap.path, s->name, strerror(-rc));
    }
    return 0;
}

int pt_set_copy_source(pt_set *s, const pt_volspec *src, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (s->copying || (s->thr_live && !s->thr_done)) {
        rc = pt_fail(err, PT_E_COPY_IN_PROGRESS, "set %s is copying; its source cannot change "
                     "under the copy", s->name);
        goto out_unlock;
    }
    if (!src) {
        if (s->has_src)
            pt_vol_close(&s->src);
        s->has_src = false;
        goto out_unlock;
    }
    pt_vol v;
    rc = pt_vol_open(&v, src, "frozen source", err);
    if (rc)
        goto out_unlock;
    if (v.size < s->master_size) {
        rc = pt_fail(err, PT_E_TOO_SMALL, "frozen source %s has %llu bytes; set %s needs %llu",
                     v.path, (unsigned long long)v.size, s->name,
                     (unsigned long long)s->master_size);
        goto out_close;
    }
    if (s->has_src)
        pt_vol_close(&s->src);
    s->src = v;
    s->has_src = true;
    goto out_unlock;

out_close:
    pt_vol_close(&v);
out_unlock:
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_copy_target(pt_set *s, const pt_volspec *dst, pt_error *err)
{
    if (dst && s->compact)
        return pt_fail(err, PT_E_WRONG_KIND, "set %s is compact: its chunks are moved one by "
                       "one, not through a copy target", s->name);
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (s->copying || (s->thr_live && !s->thr_done)) {
        rc = pt_fail(err, PT_E_COPY_IN_PROGRESS, "set %s is copying; its target cannot change "
                     "under the copy", s->name);
        goto out_unlock;
    }
    if (!dst) {
        if (s->has_dst)
            pt_vol_close(&s->dst);
        s->has_dst = false;
        goto out_unlock;
    }
    pt_vol v;
    rc = pt_vol_open(&v, dst, "copy target", err);
    if (rc)
        goto out_unlock;
    if (v.size < s->master_size) {
        rc = pt_fail(err, PT_E_TOO_SMALL, "copy target %s has %llu bytes; set %s needs %llu",
                     v.path, (unsigned long long)v.size, s->name,
                     (unsigned long long)s->master_size);
        pt_vol_close(&v);
        goto out_unlock;
    }
    if (s->has_dst)
        pt_vol_close(&s->dst);
    s->dst = v;
    s->has_dst = true;

out_unlock:
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}
