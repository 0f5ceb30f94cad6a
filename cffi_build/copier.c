/* The copier: the thread that moves a copy's chunks, and its start, suspension and end.
 *
 * It moves chunks in runs of up to 1 MiB, syncs the target once per batch, and only then clears
 * the copy bits of chunks that nobody touched in between. copy.c decides when a copy starts
 * (the point in time); this file only carries it out.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAX_RUNS 256

void pt_copier_reap(pt_set *s)
{
    if (s->thr_live && s->thr_done) {
        pthread_join(s->thr, NULL);   /* finished already: returns at once */
        PT_STORE(s->thr_live, false);
    }
}

/* The throttle pause: ends early when the copy is aborted or suspended, so neither waits for
 * a long delay to run out. */
static void pause_ms(pt_set *s, unsigned ms)
{
    struct timespec dl = pt_deadline_ms(ms);
    pthread_mutex_lock(&s->ctl_mu);
    while (!atomic_load(&s->abort_req) && !atomic_load(&s->stop_req) &&
           pthread_cond_timedwait(&s->ctl_cv, &s->ctl_mu, &dl) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&s->ctl_mu);
}

/* ---- the copier ---- */

typedef struct run {
    uint64_t c, n;
} run;

static int copy_run(pt_set *s, uint64_t c, uint64_t n, uint8_t *buf)
{
    /* contiguous on both sides unless the shadow is compact: then chunk by chunk */
    bool whole = !s->compact;
    for (uint64_t i = 0; i < n && whole; i++)
        whole = pt_bit_get(&s->C, c + i);
    if (whole) {
        uint64_t off = c << s->cshift;
        uint64_t len = 0;
        for (uint64_t i = 0; i < n; i++)
            len += pt_chunk_len(s, c + i);
        pt_vol *src = s->dir == PT_TO_SHADOW ? &s->m->vol : &s->shadow;
        pt_vol *dst = s->dir == PT_TO_SHADOW ? &s->shadow : &s->m->vol;
        if (s->has_src)
            src = &s->src;
        int rc = pt_vol_pread(src, buf, len, off);
        if (rc) {
            /* a failing frozen view (its snapshot overflowed) ends the copy, not the volume */
            if (src != &s->src)
                pt_set_offline(s, src == &s->m->vol ? PT_F_MASTER_OFFLINE : PT_F_SHADOW_OFFLINE);
            return rc;
        }
        rc = pt_vol_pwrite(dst, buf, len, off);
        if (rc)
            pt_set_offline(s, dst == &s->m->vol ? PT_F_MASTER_OFFLINE : PT_F_SHADOW_OFFLINE);
        return rc;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (!pt_bit_get(&s->C, c + i))
            continue;
        int rc = pt_copy_chunk(s, c + i, s->dir, buf);
        if (rc)
            return rc;
    }
    return 0;
}

/* Ask the kernel to start reading the next runs now, so scattered chunks of an update reach
 * the device as a deep queue instead of one synchronous read at a time. */
static void prefetch(pt_set *s, uint64_t from, uint64_t *until, uint64_t maxrun)
{
    if (s->compact || from + 16 < *until)
        return;
    int fd = s->has_src ? s->src.fd : s->dir == PT_TO_SHADOW ? s->m->vol.fd : s->shadow.fd;
    uint64_t c = from > *until ? from : *until;
    for (int k = 0; k < 64; k++) {
        c = pt_bits_next(&s->C, c);
        if (c >= s->nchunks)
            break;
        uint64_t n = pt_bits_run(&s->C, c, maxrun);
        /* advice only: a failure changes nothing but speed */
        (void)posix_fadvise(fd, (off_t)(c << s->cshift), (off_t)(n << s->cshift),
                            POSIX_FADV_WILLNEED);
        c += n;
    }
    *until = c;
}

/* The copied target data is on disk: keep the page cache for what applications use. */
static void drop_cached(pt_set *s, const run *runs, int nruns)
{
    if (s->compact)
        return;
    int fd = s->dir == PT_TO_SHADOW ? s->shadow.fd : s->m->vol.fd;
    for (int r = 0; r < nruns; r++)
        (void)posix_fadvise(fd, (off_t)(runs[r].c << s->cshift),
                            (off_t)(runs[r].n << s->cshift), POSIX_FADV_DONTNEED);
}

static int target_sync(pt_set *s)
{
    if (s->dir == PT_TO_MASTER) {
        if (pt_vol_sync(&s->m->vol) != 0) {
            pt_set_offline(s, PT_F_MASTER_OFFLINE);
            return -EIO;
        }
        return 0;
    }
    if (pt_vol_sync(&s->shadow) != 0) {
        pt_set_offline(s, PT_F_SHADOW_OFFLINE);
        return -EIO;
    }
    if (s->ov && pt_vol_sync(&s->ov->vol) != 0) {
        pt_set_offline(s, PT_F_OVERFLOW_OFFLINE);
        return -EIO;
    }
    return 0;
}

/* Clears the copy bits of a synced batch, for the chunks no write touched since. */
static void retire(pt_set *s, const run *runs, int nruns)
{
    pt_master *m = s->m;
    pthread_rwlock_rdlock(&m->gate);
    for (int r = 0; r < nruns; r++) {
        pt_lock_range(m, runs[r].c, runs[r].c + runs[r].n - 1, true);
        pthread_mutex_lock(&s->meta_mu);
        for (uint64_t c = runs[r].c; c < runs[r].c + runs[r].n; c++) {
            if (!pt_bit_get(&s->C, c))
                continue;
            pt_clear_C(s, c);
            /* a dependent chunk restored to the master is no longer the shadow's own */
            if (s->compact && !pt_bit_get(&s->D, c))
                pt_slot_free(s, c);
        }
        pthread_mutex_unlock(&s->meta_mu);
        pt_unlock_range(m, runs[r].c, runs[r].c + runs[r].n - 1);
    }
    pthread_rwlock_unlock(&m->gate);
}

static void finish(pt_set *s, int result)
{
    pt_master *m = s->m;
    bool stopped = atomic_load(&s->stop_req) && !result;
    pthread_rwlock_wrlock(&m->gate);
    pthread_mutex_lock(&s->meta_mu);
    bool complete = s->C.count == 0;
    atomic_store(&s->left_end, s->C.count);
    if (!stopped) {
        if (!complete)   /* aborted or failed: what was not copied still differs */
            pt_bits_or(&s->D, &s->C, pt_image_mark, &s->img);
        s->pflags &= ~PT_PF_COPYING;
        if (complete)
            s->pflags &= ~PT_PF_INCOMPLETE;
        else
            s->pflags |= PT_PF_INCOMPLETE;
        s->hdr_dirty = true;
    }
    PT_STORE(s->copying, false);
    pthread_mutex_unlock(&s->meta_mu);
    pthread_rwlock_unlock(&m->gate);
    if (!stopped && !complete && pt_meta_flush(s) == 0) {
        /* the differences are durable in the shadow bitmap: now the copy bitmap can go */
        pthread_mutex_lock(&s->meta_mu);
        pt_bits_zero(&s->C, pt_image_mark, &s->img);
        pthread_mutex_unlock(&s->meta_mu);
    }
    int frc = pt_meta_flush(s);
    atomic_store(&s->end_ns, pt_now_ns());
    atomic_store(&s->result, result ? result : (stopped ? 0 : frc));
    pthread_mutex_lock(&s->ctl_mu);
    PT_STORE(s->thr_done, true);
    pthread_cond_broadcast(&s->ctl_cv);
    pt_done_signal(s);   /* after thr_done: whoever the descriptor wakes sees the copy over */
    pthread_mutex_unlock(&s->ctl_mu);
}

static void *copier(void *arg)
{
    pt_set *s = arg;
    pt_master *m = s->m;
    uint64_t maxrun = PT_IO_MAX >> s->cshift;
    if (maxrun == 0)
        maxrun = 1;
    uint8_t *buf = malloc((size_t)(maxrun << s->cshift));
    run runs[MAX_RUNS];
    int rc = buf ? 0 : -ENOMEM;
    uint64_t pos = 0, since_pause = 0, since_flush = 0, fetched = 0;
    unsigned recounts = 0;
    while (!rc) {
        if (atomic_load(&s->abort_req) || atomic_load(&s->stop_req))
            break;
        int nruns = 0;
        uint64_t batch = 0;
        unsigned pause = 0;
        while (!rc && nruns < MAX_RUNS && batch < PT_COPY_BATCH && !pause) {
            if (atomic_load(&s->abort_req) || atomic_load(&s->stop_req))
                break;
            prefetch(s, pos, &fetched, maxrun);
            pthread_rwlock_rdlock(&m->gate);
            uint64_t c = pt_bits_next(&s->C, pos);
            if (c >= s->nchunks) {
                pthread_rwlock_unlock(&m->gate);
                break;
            }
            unsigned units = atomic_load(&s->units), delay = atomic_load(&s->delay_ms);
            uint64_t cap = maxrun;
            if (delay && units - since_pause < cap)   /* a throttled run stops at `units` */
                cap = units > since_pause ? units - since_pause : 1;
            uint64_t n = pt_bits_run(&s->C, c, cap);
            pt_lock_range(m, c, c + n - 1, true);
            rc = copy_run(s, c, n, buf);
            pt_unlock_range(m, c, c + n - 1);
            pthread_rwlock_unlock(&m->gate);
            runs[nruns].c = c;
            runs[nruns++].n = n;
            batch += n << s->cshift;
            pos = c + n;
            since_pause += n;
            if (delay && since_pause >= units) {
                since_pause = 0;
                pause = delay;   /* retire the batch first, so progress shows while we wait */
            }
        }
        if (nruns == 0) {
            if (rc || s->C.count == 0 || atomic_load(&s->abort_req) ||
                atomic_load(&s->stop_req))
                break;
            if (pos == 0) {
                /* A whole pass found no bit but the count says some are left: the count and the
                 * words disagree (corruption, or a bug). Going round again would spin forever;
                 * recount once, and if that does not settle it, fail the copy. */
                if (recounts++) {
                    rc = -PT_E_BAD_HEADER;
                    break;
                }
                pthread_mutex_lock(&s->meta_mu);   /* bits only change under it */
                pt_bits_recount(&s->C);
                pthread_mutex_unlock(&s->meta_mu);
                continue;
            }
            pos = fetched = 0;   /* bits left behind us: go round again */
            continue;
        }
        recounts = 0;
        if (!rc)
            rc = target_sync(s);
        if (!rc) {
            retire(s, runs, nruns);
            drop_cached(s, runs, nruns);
        }
        since_flush += batch;
        if (!rc && since_flush >= 8 * PT_COPY_BATCH) {
            since_flush = 0;
            (void)pt_meta_flush(s);   /* bounds the work redone after a crash */
        }
        if (pause)
            pause_ms(s, pause);
    }
    free(buf);
    finish(s, rc < 0 ? -rc : rc);
    return NULL;
}

int pt_copier_spawn(pt_set *s, pt_error *err)
{
    atomic_store(&s->abort_req, 0);
    atomic_store(&s->stop_req, 0);
    atomic_store(&s->result, 0);
    atomic_store(&s->total, s->C.count);
    atomic_store(&s->left_end, 0);
    atomic_store(&s->start_ns, pt_now_ns());
    atomic_store(&s->end_ns, 0);
    pt_done_clear(s);
    PT_STORE(s->thr_done, false);
    int rc = pthread_create(&s->thr, NULL, copier, s);
    if (rc) {
        PT_STORE(s->thr_done, true);
        pt_done_signal(s);
        return pt_fail(err, rc, "cannot start the copy thread of set %s", s->name);
    }
    PT_STORE(s->thr_live, true);
    return 0;
}

/* Resume a copy recorded in the header (after open). Caller holds ctl_mu. */
int pt_copy_start_locked(pt_set *s, pt_error *err)
{
    pthread_rwlock_wrlock(&s->m->gate);
    PT_STORE(s->dir, (s->pflags & PT_PF_TO_MASTER) ? PT_TO_MASTER : PT_TO_SHADOW);
    PT_STORE(s->copying, true);
    pthread_rwlock_unlock(&s->m->gate);
    int rc = pt_copier_spawn(s, err);
    if (rc) {
        pthread_rwlock_wrlock(&s->m->gate);
        PT_STORE(s->copying, false);
        pthread_rwlock_unlock(&s->m->gate);
    }
    return rc;
}

void pt_copy_stop(pt_set *s)
{
    pthread_mutex_lock(&s->ctl_mu);
    if (s->thr_live) {
        atomic_store(&s->stop_req, 1);
        pthread_cond_broadcast(&s->ctl_cv);   /* wakes a throttle pause */
        pthread_mutex_unlock(&s->ctl_mu);
        pthread_join(s->thr, NULL);
        pthread_mutex_lock(&s->ctl_mu);
        PT_STORE(s->thr_live, false);
        atomic_store(&s->stop_req, 0);
    }
    pthread_mutex_unlock(&s->ctl_mu);
}

