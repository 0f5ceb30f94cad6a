/* Sets' lifecycle: the engine, enable, open, close, retire and disable.
 *
 * The top of the set layer (see the layering in internal.h): everything else a caller does with
 * an open set is in setctl.c (status, parameters, locks, overflow attachment, join, fallback
 * record, kernel-path hooks), io.c (reads and writes) and copy.c (copies and reset).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

pt_engine *pt_engine_new(void)
{
    pt_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    if (pthread_mutex_init(&e->mu, NULL) != 0) {
        free(e);
        return NULL;
    }
    return e;
}

void pt_engine_defer_copies(pt_engine *e, int on)
{
    atomic_store(&e->defer_copies, on != 0);
}

void pt_engine_free(pt_engine *e)
{
    if (!e)
        return;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        pt_set *s = e->sets;
        pthread_mutex_unlock(&e->mu);
        if (!s)
            break;
        pt_set_close(s, NULL);   /* best effort: the caller is going away */
    }
    for (;;) {
        pthread_mutex_lock(&e->mu);
        pt_overflow *ov = e->overflows;
        pthread_mutex_unlock(&e->mu);
        if (!ov)
            break;
        pt_overflow_close(ov, NULL);
    }
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* Deferred copies: every chunk differs (enable), or what a copy had left goes back into the
 * shadow bitmap (open after a crash); durable before the set is handed out. */
static int defer_copy(pt_set *s, bool all, pt_error *err)
{
    pthread_mutex_lock(&s->meta_mu);
    if (all)
        pt_bits_fill(&s->D, pt_image_mark, &s->img);
    pt_bits_or(&s->D, &s->C, pt_image_mark, &s->img);
    pt_bits_zero(&s->C, pt_image_mark, &s->img);
    if (all)
        s->pflags &= ~PT_PF_TO_MASTER;
    s->pflags = (s->pflags & ~(PT_PF_COPYING | PT_PF_SUSPENDED | PT_PF_SIBLINGS)) | PT_PF_INCOMPLETE;
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    int rc = pt_meta_flush(s);
    return rc ? pt_fail(err, -rc, "bitmap volume %s of set %s: %s", s->bitmap.path, s->name,
                        strerror(-rc))
              : 0;
}

/* ---- the handle ---- */

static pt_set *set_alloc(pt_engine *eng)
{
    pt_set *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (pthread_mutex_init(&s->meta_mu, NULL) != 0)
        goto out_free;
    if (pthread_mutex_init(&s->ctl_mu, NULL) != 0)
        goto out_meta_mu;
    if (pt_cond_init_monotonic(&s->ctl_cv) != 0)
        goto out_ctl_mu;
    if (pt_gc_init(&s->meta_gc) != 0)
        goto out_ctl_cv;
    if (pthread_mutex_init(&s->fb_mu, NULL) != 0)
        goto out_meta_gc;
    s->done_fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);   /* readable: no copy runs yet */
    if (s->done_fd < 0)
        goto out_fb_mu;
    s->eng = eng;
    s->shadow.fd = s->bitmap.fd = -1;
    atomic_store(&s->units, PT_DEFAULT_UNITS);
    s->hdr_state = PT_STATE_DIRTY;
    s->fb_fd = -1;
    return s;

out_fb_mu:
    pthread_mutex_destroy(&s->fb_mu);
out_meta_gc:
    pt_gc_destroy(&s->meta_gc);
out_ctl_cv:
    pthread_cond_destroy(&s->ctl_cv);
out_ctl_mu:
    pthread_mutex_destroy(&s->ctl_mu);
out_meta_mu:
    pthread_mutex_destroy(&s->meta_mu);
out_free:
    free(s);
    return NULL;
}

static void set_free(pt_set *s)
{
    pt_meta_free(s);
    free(s->rel);
    if (s->has_src)
        pt_vol_close(&s->src);
    if (s->has_dst)
        pt_vol_close(&s->dst);
    pt_vol_close(&s->shadow);
    pt_vol_close(&s->bitmap);
    if (s->fb_fd >= 0)
        close(s->fb_fd);
    close(s->done_fd);
    pthread_mutex_destroy(&s->fb_mu);
    pt_gc_destroy(&s->meta_gc);
    pthread_cond_destroy(&s->ctl_cv);
    pthread_mutex_destroy(&s->ctl_mu);
    pthread_mutex_destroy(&s->meta_mu);
    free(s);
}

/* ---- enable and open ---- */

typedef pt_open_args open_args;

static unsigned log2u(uint32_t v)
{
    unsigned n = 0;
    while ((1u << n) < v)
        n++;
    return n;
}

/* Opens the set's shadow and bitmap volumes and finds its master (opening it when no other set
 * has). On failure set_free closes what was opened. Caller holds eng->mu. */
static int set_volumes(pt_engine *eng, pt_set *s, const open_args *a, pt_error *err)
{
    pt_volkey key;
    int rc = pt_master_key(a->master, &key, err);
    if (rc)
        return rc;
    /* an imported set has no shadow volume: its one volume is opened as the master */
    if (a->shadow && (rc = pt_vol_open(&s->shadow, a->shadow, "shadow", err)) != 0)
        return rc;
    if (!s->bitmap_mem && (rc = pt_vol_open(&s->bitmap, a->bitmap, "bitmap", err)) != 0)
        return rc;
    rc = pt_master_get(eng, a->master, &key, &s->m, err);
    snprintf(s->name, sizeof s->name, "%s", a->shadow ? s->shadow.path : a->master->path);
    return rc;
}

/* Enable: the configuration checked against the volumes, a fresh bitmap written, and the
 * overflow volume, when given, attached in both headers. */
static int set_create(pt_set *s, const pt_set_config *c, pt_overflow *ov, pt_error *err)
{
    pt_master *m = s->m;
    s->kind = c->kind;
    s->chunk = c->chunk_size ? c->chunk_size : PT_CHUNK_DEFAULT;
    s->master_size = m->vol.size;
    if (pt_uuid_is_zero(c->uuid))
        pt_uuid_generate(s->uuid);
    else
        memcpy(s->uuid, c->uuid, 16);
    atomic_store(&s->delay_ms, c->copy_delay_ms);
    atomic_store(&s->units, c->copy_units ? c->copy_units : PT_DEFAULT_UNITS);
    bool compact = s->kind == PT_DEPENDENT && s->shadow_size < s->master_size;
    if (s->master_size == 0)
        return pt_fail(err, PT_E_TOO_SMALL, "master volume %s is empty", m->vol.path);
    if (ov && !compact)
        return pt_fail(err, PT_E_WRONG_KIND,
                       "set %s is not a compact dependent set (shadow smaller than master); "
                       "only those use an overflow volume such as %s", s->name, ov->vol.path);
    if (ov && ov->chunk != s->chunk)
        return pt_fail(err, PT_E_INVALID, "overflow volume %s has %u-byte chunks; the set uses %u",
                       ov->vol.path, ov->chunk, s->chunk);
    if (s->kind == PT_INDEPENDENT && s->shadow_size < s->master_size)
        return pt_fail(err, PT_E_TOO_SMALL,
                       "shadow volume %s is %llu bytes; an independent shadow needs at least the "
                       "master's %llu (a dependent set may be smaller)", s->shadow.path,
                       (unsigned long long)s->shadow_size, (unsigned long long)s->master_size);
    if (m->nsets && s->chunk != m->chunk)
        return pt_fail(err, PT_E_INVALID,
                       "master %s is already shadowed with %u-byte chunks; other sets on it must "
                       "use the same chunk size, not %u", m->vol.path, m->chunk, s->chunk);
    /* a restore shows the master's new image before the volume holds it: a point in time
     * taken of the volume now would mix old and new (m->sets changes only under eng->mu) */
    for (int i = 0; i < m->nsets; i++)
        if (PT_LOAD(m->sets[i]->copying) && PT_LOAD(m->sets[i]->dir) == PT_TO_MASTER)
            return pt_fail(err, PT_E_COPY_IN_PROGRESS, "master %s is being restored from set "
                           "%s; enable the new set once that restore has ended", m->vol.path,
                           m->sets[i]->name);
    int rc = pt_meta_create(s, err);
    if (rc || !ov)
        return rc;
    rc = pt_ov_add_set(ov, s->uuid, err);
    if (rc)
        return rc;
    memcpy(s->ov_uuid, ov->uuid, 16);
    rc = pt_meta_write_header(s, PT_STATE_DIRTY, err);
    if (rc)
        goto out_remove_set;
    return 0;

out_remove_set:
    (void)pt_ov_remove_set(ov, s->uuid, NULL);   /* best effort: the cause is reported */
    return rc;
}

/* Every overflow entry of the index must name a chunk of the overflow volume: a corrupted entry
 * would otherwise send I/O past its end or into its header. */
static int check_ov_index(pt_set *s, pt_overflow *ov, pt_error *err)
{
    for (uint64_t c = 0; s->compact && c < s->nchunks; c++) {
        uint32_t v = s->idx[c];
        if ((v & PT_IDX_OV) && (uint64_t)(v & ~PT_IDX_OV) >= ov->nchunks)
            return pt_fail(err, PT_E_BAD_HEADER,
                           "bitmap volume %s: the chunk index of set %s puts chunk %llu at "
                           "overflow chunk %u, but overflow volume %s has %llu chunks "
                           "(corrupted)", s->bitmap.path, s->name, (unsigned long long)c,
                           v & ~PT_IDX_OV, ov->vol.path, (unsigned long long)ov->nchunks);
    }
    return 0;
}

/* The overflow volume a loaded header names must be ov; without ov, chunks that live on it
 * make the shadow side offline. */
static int check_overflow(pt_set *s, pt_overflow *ov, pt_error *err)
{
    if (!ov) {
        if (s->ov_used)
            pt_set_offline(s, PT_F_OVERFLOW_OFFLINE);
        return 0;
    }
    if (memcmp(ov->uuid, s->ov_uuid, 16) != 0)
        return pt_fail(err, PT_E_INVALID, "set %s uses another overflow volume than %s", s->name,
                       ov->vol.path);
    if (ov->chunk != s->chunk)
        return pt_fail(err, PT_E_BAD_HEADER, "overflow volume %s has %u-byte chunks; set %s uses "
                       "%u (corrupted header)", ov->vol.path, ov->chunk, s->name, s->chunk);
    return check_ov_index(s, ov, err);
}

/* Open: the header loaded and checked against the volumes, then marked in use (dirty). */
static int set_load(pt_set *s, pt_overflow *ov, bool imported, pt_error *err)
{
    pt_master *m = s->m;
    int rc = pt_meta_load(s, m->vol.size, s->shadow_size, err);
    if (rc)
        return rc;
    if ((s->kind == PT_IMPORTED) != imported)
        return pt_fail(err, PT_E_WRONG_KIND, imported
                       ? "bitmap volume %s belongs to a set, not to an imported shadow"
                       : "bitmap volume %s belongs to an imported shadow, not to a set",
                       s->bitmap.path);
    if (m->nsets && s->chunk != m->chunk)
        return pt_fail(err, PT_E_INVALID, "master %s is shadowed with %u-byte chunks; this set "
                       "uses %u", m->vol.path, m->chunk, s->chunk);
    if (!pt_uuid_is_zero(s->ov_uuid))
        rc = check_overflow(s, ov, err);
    else if (ov)
        rc = pt_fail(err, PT_E_INVALID, "set %s has no overflow volume attached; attach %s after "
                     "opening it", s->name, ov->vol.path);
    if (rc)
        return rc;
    s->generation++;
    return pt_meta_write_header(s, PT_STATE_DIRTY, err);
}

/* Makes the set visible: to its master's I/O, to the engine, to its overflow volume. Caller
 * holds eng->mu. */
static void set_register(pt_engine *eng, pt_set *s, pt_overflow *ov)
{
    pt_master *m = s->m;
    s->cshift = log2u(s->chunk);
    if (ov && !pt_uuid_is_zero(s->ov_uuid)) {
        s->ov = ov;
        pt_ov_set_opened(ov, s);
    } else if (ov) {
        pt_ov_set_closed(ov);   /* not attached after all: drop the reference */
    }
    pthread_rwlock_wrlock(&m->gate);
    m->chunk = s->chunk;
    m->sets[m->nsets++] = s;
    pthread_rwlock_unlock(&m->gate);
    s->next = eng->sets;
    eng->sets = s;
}

int pt_set_setup(pt_engine *eng, const open_args *a, pt_set **out, pt_error *err)
{
    pt_set *s = set_alloc(eng);
    if (!s)
        return pt_fail(err, ENOMEM, "out of memory (or of file descriptors)");
    s->bitmap_mem = a->cfg && a->cfg->bitmap_in_memory;
    /* the set's reference keeps a close or delete of the overflow from freeing it under us */
    int rc = a->ov ? pt_ov_hold(a->ov, err) : 0;
    if (rc)
        goto out_free;
    pthread_mutex_lock(&eng->mu);
    rc = set_volumes(eng, s, a, err);
    if (rc)
        goto out_unlock;
    rc = pt_check_volumes(eng, s, s->m, a->ov, err);
    if (!rc)
        rc = pt_import_check(s, a, err);
    if (rc)
        goto out_put_master;
    s->shadow_size = a->imported ? s->m->vol.size : s->shadow.size;
    rc = a->cfg ? set_create(s, a->cfg, a->ov, err) : set_load(s, a->ov, a->imported, err);
    if (rc)
        goto out_put_master;
    set_register(eng, s, a->ov);
    pthread_mutex_unlock(&eng->mu);
    *out = s;
    return 0;

out_put_master:
    pt_master_put(eng, s->m);
out_unlock:
    pthread_mutex_unlock(&eng->mu);
    if (a->ov)
        pt_ov_set_closed(a->ov);
out_free:
    set_free(s);
    return rc;
}

int pt_set_enable(pt_engine *eng, const pt_volspec *master, const pt_volspec *shadow,
                  const pt_volspec *bitmap, const pt_set_config *cfg, pt_overflow *ov,
                  pt_set **out, pt_error *err)
{
    if (!cfg)
        return pt_fail(err, PT_E_INVALID, "no set configuration given");
    if (cfg->copy_delay_ms > PT_DELAY_MAX || cfg->copy_units > PT_UNITS_MAX)
        return pt_fail(err, PT_E_INVALID, "copy delay must be at most %u ms and copy units at "
                       "most %u chunks", PT_DELAY_MAX, PT_UNITS_MAX);
    if (cfg->kind == PT_IMPORTED)
        return pt_fail(err, PT_E_INVALID, "an imported shadow is made by pt_import_create");
    open_args a = {master, shadow, bitmap, cfg, ov, false};
    pt_set *s;
    int rc = pt_set_setup(eng, &a, &s, err);
    if (rc)
        return rc;
    if (s->kind == PT_INDEPENDENT) {
        rc = atomic_load(&eng->defer_copies) ? defer_copy(s, true, err)
                                             : pt_set_copy(s, PT_TO_SHADOW, 1, 0, err);
        if (rc)
            goto out_disable;
    }
    *out = s;
    return 0;

out_disable:
    pt_set_disable(s, NULL);
    return rc;
}

int pt_set_open(pt_engine *eng, const pt_volspec *master, const pt_volspec *shadow,
                const pt_volspec *bitmap, pt_overflow *ov, pt_set **out, pt_error *err)
{
    open_args a = {master, shadow, bitmap, NULL, ov, false};
    pt_set *s;
    int rc = pt_set_setup(eng, &a, &s, err);
    if (rc)
        return rc;
    if ((s->pflags & PT_PF_COPYING) && atomic_load(&eng->defer_copies)) {
        rc = defer_copy(s, false, err);
    } else if ((s->pflags & PT_PF_COPYING) && (s->pflags & PT_PF_SUSPENDED)) {
        pt_copy_hold(s);   /* suspended by the user: it waits for pt_set_resume */
    } else if (s->pflags & PT_PF_COPYING) {
        pthread_mutex_lock(&s->ctl_mu);
        rc = pt_copy_start_locked(s, err);
        pthread_mutex_unlock(&s->ctl_mu);
        if (rc)
            goto out_close;
    }
    *out = s;
    return 0;

out_close:
    pt_set_close(s, NULL);
    return rc;
}

/* ---- close, retire, disable ---- */

/* What a close leaves on disk: every volume flushed, and the header saying clean, or that the
 * shadow must not be served until a reset when a volume is offline. The first failure is
 * reported; the steps after it still run. */
static int close_flush(pt_set *s, uint32_t state, pt_error *err)
{
    pt_master *m = s->m;
    /* volumes already known to be offline are not flushed again: the header records it */
    unsigned off = atomic_load(&s->rflags);
    int rc = 0, r;
    if (!(off & PT_F_MASTER_OFFLINE) && (r = pt_vol_sync(&m->vol)) != 0)
        rc = pt_fail(err, -r, "master volume %s: flush failed: %s", m->vol.path, strerror(-r));
    if (s->shadow.fd >= 0 && !(off & PT_F_SHADOW_OFFLINE) && (r = pt_vol_sync(&s->shadow)) != 0)
        rc = pt_fail(err, -r, "shadow volume %s: flush failed: %s", s->shadow.path,
                     strerror(-r));
    if (s->ov && !(off & PT_F_OVERFLOW_OFFLINE) && (r = pt_ov_flush(s->ov)) != 0)
        rc = pt_fail(err, -r, "overflow volume %s: flush failed: %s", s->ov->vol.path,
                     strerror(-r));
    if (!(off & PT_F_BITMAP_OFFLINE) && (r = pt_meta_flush(s)) != 0)
        rc = pt_fail(err, -r, "bitmap volume %s: flush failed: %s", s->bitmap.path,
                     strerror(-r));
    /* A bitmap that went offline missed the bits of writes made since: when it takes writes
     * again, all of the bits in memory go to it, so the resync the header asks for below misses
     * no chunk. Still failing, it records nothing; the caller sees why. */
    if ((off & PT_F_BITMAP_OFFLINE) && (r = pt_meta_rewrite(s)) != 0)
        rc = pt_fail(err, -r, "bitmap volume %s: still fails, its bits miss writes made while "
                     "it was offline: %s", s->bitmap.path, strerror(-r));
    if (atomic_load(&s->rflags) & PT_OFFLINE_MASK) {
        /* Remember it where the next open looks: the bits may have missed writes made while a
         * volume was offline, so the shadow must not be served until a reset. */
        pthread_mutex_lock(&s->meta_mu);
        s->pflags |= PT_PF_NEED_RESYNC;
        pthread_mutex_unlock(&s->meta_mu);
    }
    if (!rc || (s->pflags & PT_PF_NEED_RESYNC)) {
        r = pt_meta_write_header(s, state, rc ? NULL : err);
        if (!rc)
            rc = r;
    }
    return rc;
}

/* Takes the set out of the engine, its master and its overflow volume, and frees it. */
static void set_unregister(pt_set *s)
{
    pt_engine *eng = s->eng;
    pt_master *m = s->m;
    pthread_mutex_lock(&eng->mu);
    for (pt_set **p = &eng->sets; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    pthread_rwlock_wrlock(&m->gate);
    for (int i = 0; i < m->nsets; i++)
        if (m->sets[i] == s) {
            m->sets[i] = m->sets[--m->nsets];
            break;
        }
    pthread_rwlock_unlock(&m->gate);
    pt_master_put(eng, m);
    pthread_mutex_unlock(&eng->mu);
    if (s->ov)
        pt_ov_set_closed(s->ov);
    set_free(s);
}

/* Suspends the copy, records state (a final one: the header was written already) and frees. */
static int set_teardown(pt_set *s, uint32_t state, pt_error *err)
{
    pt_hold_drop_set(s);   /* a group hold on it ends first, thawed unchanged */
    pt_copy_stop(s);
    int rc = !pt_state_final(state) ? close_flush(s, state, err) : 0;
    set_unregister(s);
    return rc;
}

int pt_set_close(pt_set *s, pt_error *err)
{
    return set_teardown(s, PT_STATE_CLEAN, err);
}

int pt_set_retire(pt_set *s, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    bool busy = PT_LOAD(s->copying);
    bool again = atomic_load(&s->retired);
    bool held = PT_LOAD(s->hold) != NULL;
    busy = busy || held;
    if (!busy)
        atomic_store(&s->retired, 1);   /* no copy may start from here on (checked under ctl_mu) */
    pthread_mutex_unlock(&s->ctl_mu);
    if (again)
        return 0;
    if (held)
        return pt_fail(err, PT_E_IN_USE, "set %s is held for a group point in time; release "
                       "the hold before disabling", s->name);
    if (busy)
        return pt_fail(err, PT_E_COPY_IN_PROGRESS,
                       "set %s is copying; wait for the copy or abort it before disabling",
                       s->name);
    /* The header goes first: after this the set can never be reopened with these chunks. Any
     * later header write (a flush from a write still in flight) records DISABLED too. */
    int rc = pt_meta_write_header(s, PT_STATE_DISABLED, err);
    if (rc)
        goto out_unretire;
    if (s->ov) {
        pthread_mutex_lock(&s->meta_mu);
        for (uint64_t c = 0; c < s->nchunks; c++) {
            uint32_t v = pt_idx_get(s, c);
            if (v & PT_IDX_OV)
                pt_ov_release(s->ov, v & ~PT_IDX_OV);
        }
        pthread_mutex_unlock(&s->meta_mu);
        /* The set is gone either way; should the overflow keep a stale entry, it only blocks
         * that overflow's deletion until the entry is removed by hand. */
        if (pt_ov_flush(s->ov) == 0)
            (void)pt_ov_remove_set(s->ov, s->uuid, NULL);
    }
    return 0;

out_unretire:
    atomic_store(&s->retired, 0);
    return rc;
}

int pt_set_disable(pt_set *s, pt_error *err)
{
    int rc = pt_set_retire(s, err);
    if (rc)
        return rc;
    set_teardown(s, PT_STATE_DISABLED, NULL);
    return 0;
}

void pt_set_closing(pt_set *s)
{
    pthread_mutex_lock(&s->ctl_mu);
    atomic_store(&s->closing, 1);
    pthread_cond_broadcast(&s->ctl_cv);   /* pt_set_wait looks at closing when woken */
    pthread_mutex_unlock(&s->ctl_mu);
    pt_hold_drop_set(s);
}
