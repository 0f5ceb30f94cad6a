/* The copier: the thread that moves a copy's chunks, and its start, suspension and end.
 *
 * The copier thread scans the copy bitmap for runs of up to 1 MiB and hands them to a small
 * pool of workers, so that several runs are in flight at once (dd keeps one request at the
 * device; a copy keeps a queue), each moved with direct I/O where the volumes allow it
 * (direct_io.c). Runs are grouped in batches of up to PT_COPY_BATCH bytes: once every run of a
 * batch has ended, the copier syncs the target and only then clears the copy bits of the
 * batch's chunks that nobody touched in between; meanwhile the workers move the next batch.
 * copy.c decides when a copy starts (the point in time); this file only carries it out.
 *
 * Why several runs in flight lose no write (io.c's rule: a chunk's bits and its data change
 * together, under its stripe):
 *  - a worker holds the master's gate shared and its run's stripes exclusive for the whole
 *    read and write of the run, and only one run's stripes at a time, taken in ascending order
 *    by pt_lock_range like every writer's: the lock order of internal.h holds, so workers,
 *    writers and retire() cannot deadlock, whatever the runs in flight;
 *  - under those stripes the worker reads the copy bits again and moves only chunks whose bit
 *    is still set. A writer that changed a chunk first copied it itself (prep_master or
 *    prep_shadow, under the same stripe, while the bit was set) and cleared the bit: the
 *    worker leaves that chunk alone, so it never puts data newer than the point in time on the
 *    target, nor overwrites a write made to the target;
 *  - a writer that comes after the worker but before retire() finds the bit still set and
 *    copies the chunk once more: the same data, since the source chunk cannot change while its
 *    bit is set without its writer clearing the bit first; then it clears the bit;
 *  - the runs handed out are disjoint; the scan goes round again to chunks behind it only once
 *    every batch has ended and been retired, so no two workers move the same chunk (and if
 *    they did, they would take turns on its stripes);
 *  - retire() clears a bit only after a target sync that began once the run's write had
 *    returned, only for a run moved whole, and only if the bit is still set (under the stripe
 *    and meta_mu): a chunk a writer touched meanwhile keeps the writer's D bit.
 * The copier thread never holds the gate while it waits for workers, so a freeze (the gate
 * exclusive) waits at most for the runs in flight, each one I/O pair of at most 1 MiB.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "direct_io.h"
#include "internal.h"

#define MAX_RUNS 256   /* runs per batch */
#define NBATCH 3       /* batches under way: the oldest syncs and retires while the rest move */
#define DEPTH 32        /* workers at most, so runs in flight; started as the queue needs them */
#define DEPTH_BIG 8     /* ... while the runs queued are large: */
#define INFLIGHT (8u << 20)   /* more workers only while their runs total at most this */

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

/* ---- runs, batches and the pool of workers ---- */

typedef struct run {
    uint64_t c, n;
    bool ok;       /* moved whole: retired once the target is synced */
    bool cached;   /* written through the page cache: dropped from it once synced */
} run;

typedef struct batch {
    run runs[MAX_RUNS];
    int nruns;       /* handed to the pool (pool mu) */
    int nended;      /* of those, ended: moved, failed or skipped (pool mu) */
    int rc;          /* the first failure among them (pool mu) */
    uint64_t bytes;
    unsigned pause;  /* throttle: pause this long once the batch is retired */
} batch;

typedef struct job {
    batch *b;
    int i;
} job;

typedef struct pool {
    pt_set *s;
    pt_dio src, dst;
    size_t bufsize;
    batch b[NBATCH];
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* to workers: a job is queued, or quit */
    pthread_cond_t done_cv;   /* to the copier: a job ended */
    job q[NBATCH * MAX_RUNS];
    int qhead, qlen, nworkers, idle;
    bool quit;
    atomic_bool failed;       /* a run failed: the rest are skipped */
    uint8_t *own_buf;         /* for the copier itself, when no worker could start */
    pthread_t tid[DEPTH];
} pool;

static bool stopping(pool *p)
{
    return atomic_load(&p->s->abort_req) || atomic_load(&p->s->stop_req) ||
           atomic_load(&p->failed);
}

/* A restore (copy to the master) of a master that has other sets: before the run's chunks are
 * written, each of those keeps its point in time exactly as for an application's write to the
 * master (io.c's pt_master_prepare): a dependent set receives the old data, an independent set's
 * bit is set, a copy it runs moves the chunk first, all durable before the master changes.
 * On the kernel path the master's siblings are device-mapper snapshots and eras the engine's
 * writes to the raw volumes would bypass: there the restore writes through the master's device
 * stack (a copy target, pt_set_copy_target), whose origin copies on write into every snapshot
 * and whose eras mark the change, before the write reaches the volume; without one that path
 * refuses the restore (copy.c), and a sibling that appeared meanwhile fails the run rather than
 * be corrupted. */
static int prepare_siblings(pool *p, run *r, uint8_t *buf)
{
    pt_set *s = p->s;
    if (s->dir != PT_TO_MASTER || s->m->nsets < 2 || s->has_dst)
        return 0;
    if (s->has_src)
        return -PT_E_DEPENDENCY;
    return pt_master_prepare(s->m, s, r->c, r->c + r->n - 1, s, buf);
}

/* Moves chunks [c, c+n) in place (same offset on both sides: the shadow is not compact). */
static int move_range(pool *p, run *r, uint64_t c, uint64_t n, uint8_t *buf)
{
    pt_set *s = p->s;
    uint64_t off = c << s->cshift;
    uint64_t len = 0;
    for (uint64_t i = 0; i < n; i++)
        len += pt_chunk_len(s, c + i);
    pt_vol *src = p->src.v, *dst = p->dst.v;
    bool direct = true;
    int rc = pt_dio_pread(&p->src, buf, len, off, &direct);
    if (rc) {
        /* a failing frozen view (its snapshot overflowed) ends the copy, not the volume */
        if (src != &s->src)
            pt_set_offline(s, src == &s->m->vol ? PT_F_MASTER_OFFLINE : PT_F_SHADOW_OFFLINE);
        return rc;
    }
    direct = true;
    rc = pt_dio_pwrite(&p->dst, buf, len, off, &direct);
    if (!direct)
        r->cached = true;
    if (rc)   /* the copy target is the master's device stack: the master failed */
        pt_set_offline(s, dst == &s->shadow ? PT_F_SHADOW_OFFLINE : PT_F_MASTER_OFFLINE);
    return rc;
}

/* Moves run r. Caller holds the gate shared and the run's stripes exclusive. */
static int copy_run(pool *p, run *r, uint8_t *buf)
{
    pt_set *s = p->s;
    r->cached = false;
    int prc = prepare_siblings(p, r, buf);
    if (prc)
        return prc;
    /* contiguous on both sides unless the shadow is compact: then chunk by chunk; a chunk a
     * writer moved meanwhile (its bit clear) is left alone */
    if (!s->compact) {
        for (uint64_t i = 0; i < r->n;) {
            if (!pt_bit_get(&s->C, r->c + i)) {
                i++;
                continue;
            }
            uint64_t j = i + 1;
            while (j < r->n && pt_bit_get(&s->C, r->c + j))
                j++;
            int rc = move_range(p, r, r->c + i, j - i, buf);
            if (rc)
                return rc;
            i = j;
        }
        return 0;
    }
    r->cached = true;
    for (uint64_t i = 0; i < r->n; i++) {
        if (!pt_bit_get(&s->C, r->c + i))
            continue;
        int rc = pt_copy_chunk(s, r->c + i, s->dir, buf);
        if (rc)
            return rc;
    }
    return 0;
}

static void run_job(pool *p, job j, uint8_t *buf)
{
    pt_master *m = p->s->m;
    run *r = &j.b->runs[j.i];
    int rc = 0;
    if (!buf) {
        rc = -ENOMEM;
    } else if (!stopping(p)) {   /* skipped on abort, suspension or failure: not retired */
        pthread_rwlock_rdlock(&m->gate);
        pt_lock_range(m, r->c, r->c + r->n - 1, true);
        rc = copy_run(p, r, buf);
        pt_unlock_range(m, r->c, r->c + r->n - 1);
        pthread_rwlock_unlock(&m->gate);
        r->ok = rc == 0;
    }
    if (rc)
        atomic_store(&p->failed, true);
    pthread_mutex_lock(&p->mu);
    if (rc && !j.b->rc)
        j.b->rc = rc;
    j.b->nended++;
    pthread_cond_signal(&p->done_cv);   /* only the copier thread waits on it */
    pthread_mutex_unlock(&p->mu);
}

static uint8_t *alloc_buf(size_t size)
{
    void *buf;
    return posix_memalign(&buf, PT_DIO_MEM_ALIGN, size) == 0 ? buf : NULL;
}

/* The bytes run j needs in a worker's buffer: the run, or one chunk (a compact shadow's runs
 * and the siblings' copy-on-write go chunk by chunk). */
static size_t job_bytes(pool *p, job j)
{
    const pt_set *s = p->s;
    size_t need = (size_t)(j.b->runs[j.i].n << s->cshift);
    if (need < s->chunk)
        need = s->chunk;
    return need < p->bufsize ? need : p->bufsize;
}

static void *worker(void *arg)
{
    pool *p = arg;
    /* sized to the largest run this worker has moved, so the many workers of an update of
     * scattered chunks hold little memory */
    uint8_t *buf = NULL;
    size_t have = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->qlen && !p->quit) {
            p->idle++;
            pthread_cond_wait(&p->work_cv, &p->mu);
            p->idle--;
        }
        if (!p->qlen)
            break;   /* told to quit, and nothing is left */
        job j = p->q[p->qhead];
        p->qhead = (p->qhead + 1) % (int)(sizeof p->q / sizeof p->q[0]);
        p->qlen--;
        pthread_mutex_unlock(&p->mu);
        size_t need = job_bytes(p, j);
        if (need > have) {
            free(buf);
            buf = alloc_buf(need);
            have = buf ? need : 0;
        }
        run_job(p, j, buf);   /* a NULL buffer fails the run (ENOMEM) */
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    free(buf);
    return NULL;
}

/* Hands run i of b (filled in by the caller) to a worker, starting one when none is idle. */
static void submit(pool *p, batch *b, int i)
{
    /* Small runs (an update of scattered chunks) are latency-bound: up to DEPTH in flight;
     * large ones are bandwidth-bound and would only hold more memory: DEPTH_BIG. */
    uint64_t len = b->runs[i].n << p->s->cshift;
    int depth = len ? (int)(INFLIGHT / len) : DEPTH;
    depth = depth < DEPTH_BIG ? DEPTH_BIG : depth > DEPTH ? DEPTH : depth;
    pthread_mutex_lock(&p->mu);
    b->nruns++;
    if (p->idle <= p->qlen && p->nworkers < depth &&
        pthread_create(&p->tid[p->nworkers], NULL, worker, p) == 0)
        p->nworkers++;
    bool alone = p->nworkers == 0;
    if (!alone) {
        int cap = (int)(sizeof p->q / sizeof p->q[0]);
        p->q[(p->qhead + p->qlen) % cap] = (job){b, i};
        p->qlen++;
        pthread_cond_signal(&p->work_cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (alone) {   /* no thread could start: the copier moves the run itself */
        if (!p->own_buf)
            p->own_buf = alloc_buf(p->bufsize);
        run_job(p, (job){b, i}, p->own_buf);
    }
}

static int pool_init(pool *p, pt_set *s, size_t bufsize)
{
    p->s = s;
    p->bufsize = bufsize;
    int rc = pthread_mutex_init(&p->mu, NULL);
    if (rc)
        return -rc;
    if ((rc = pthread_cond_init(&p->work_cv, NULL)) != 0)
        goto out_mu;
    if ((rc = pthread_cond_init(&p->done_cv, NULL)) != 0)
        goto out_work_cv;
    pt_vol *src = s->dir == PT_TO_SHADOW ? &s->m->vol : &s->shadow;
    pt_dio_open(&p->src, s->has_src ? &s->src : src, false);
    pt_dio_open(&p->dst, s->dir == PT_TO_SHADOW ? &s->shadow
                         : s->has_dst ? &s->dst : &s->m->vol, true);
    return 0;

out_work_cv:
    pthread_cond_destroy(&p->work_cv);
out_mu:
    pthread_mutex_destroy(&p->mu);
    return -rc;
}

/* Lets the workers finish what is queued (each skips it when the copy is stopping), then
 * joins them. */
static void pool_destroy(pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->tid[i], NULL);
    free(p->own_buf);
    pt_dio_close(&p->dst);
    pt_dio_close(&p->src);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
}

/* ---- the copier ---- */

/* Ask the kernel to start reading the next runs now, so scattered chunks of an update reach
 * the device as a deep queue instead of one synchronous read at a time. Only for a source
 * read through the page cache: direct reads would not see what it fetched. */
static void prefetch(pool *p, uint64_t from, uint64_t *until, uint64_t maxrun)
{
    pt_set *s = p->s;
    if (s->compact || atomic_load(&p->src.on) || from + 16 < *until)
        return;
    int fd = p->src.v->fd;
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
static void drop_cached(pt_set *s, const batch *b)
{
    if (s->compact)
        return;
    int fd = s->dir == PT_TO_SHADOW ? s->shadow.fd : s->has_dst ? s->dst.fd : s->m->vol.fd;
    for (int r = 0; r < b->nruns; r++)
        if (b->runs[r].cached)
            (void)posix_fadvise(fd, (off_t)(b->runs[r].c << s->cshift),
                                (off_t)(b->runs[r].n << s->cshift), POSIX_FADV_DONTNEED);
}

static int target_sync(pt_set *s)
{
    if (s->dir == PT_TO_MASTER) {
        /* through the copy target the flush goes down its stack to the volume */
        if (pt_vol_sync(s->has_dst ? &s->dst : &s->m->vol) != 0) {
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

/* Clears the copy bits of a synced batch's moved runs, for the chunks no write touched since. */
static void retire(pt_set *s, const batch *b)
{
    pt_master *m = s->m;
    pthread_rwlock_rdlock(&m->gate);
    for (int r = 0; r < b->nruns; r++) {
        const run *x = &b->runs[r];
        if (!x->ok)
            continue;
        pt_lock_range(m, x->c, x->c + x->n - 1, true);
        pthread_mutex_lock(&s->meta_mu);
        for (uint64_t c = x->c; c < x->c + x->n; c++) {
            if (!pt_bit_get(&s->C, c))
                continue;
            pt_clear_C(s, c);
            /* a dependent chunk restored to the master is no longer the shadow's own */
            if (s->compact && !pt_bit_get(&s->D, c))
                pt_slot_free(s, c);
        }
        pthread_mutex_unlock(&s->meta_mu);
        pt_unlock_range(m, x->c, x->c + x->n - 1);
    }
    pthread_rwlock_unlock(&m->gate);
}

/* Waits until every run of b has ended, then syncs the target and retires what was moved. */
static int complete(pool *p, batch *b, uint64_t *since_flush)
{
    pt_set *s = p->s;
    pthread_mutex_lock(&p->mu);
    while (b->nended < b->nruns)
        pthread_cond_wait(&p->done_cv, &p->mu);
    int rc = b->rc;
    pthread_mutex_unlock(&p->mu);
    if (!rc)
        rc = target_sync(s);
    if (!rc) {
        retire(s, b);
        drop_cached(s, b);
    }
    *since_flush += b->bytes;
    if (!rc && *since_flush >= 8 * PT_COPY_BATCH) {
        *since_flush = 0;
        (void)pt_meta_flush(s);   /* bounds the work redone after a crash */
    }
    return rc;
}

/* Scans the copy bits from *pos and hands the runs found to the pool, until the batch is full
 * or the throttle asks for a pause (b->pause). True when the scan reached the end. */
static bool fill(pool *p, batch *b, uint64_t *pos, uint64_t *since_pause, uint64_t *fetched,
                 uint64_t maxrun)
{
    pt_set *s = p->s;
    pt_master *m = s->m;
    b->nruns = b->nended = b->rc = 0;
    b->bytes = 0;
    b->pause = 0;
    while (b->nruns < MAX_RUNS && b->bytes < PT_COPY_BATCH && !stopping(p)) {
        prefetch(p, *pos, fetched, maxrun);
        pthread_rwlock_rdlock(&m->gate);
        uint64_t c = pt_bits_next(&s->C, *pos);
        if (c >= s->nchunks) {
            pthread_rwlock_unlock(&m->gate);
            return true;
        }
        unsigned units = atomic_load(&s->units), delay = atomic_load(&s->delay_ms);
        uint64_t cap = maxrun;
        if (delay && units - *since_pause < cap)   /* a throttled run stops at `units` */
            cap = units > *since_pause ? units - *since_pause : 1;
        uint64_t n = pt_bits_run(&s->C, c, cap);
        pthread_rwlock_unlock(&m->gate);
        int i = b->nruns;
        b->runs[i] = (run){.c = c, .n = n};
        submit(p, b, i);
        b->bytes += n << s->cshift;
        *pos = c + n;
        *since_pause += n;
        if (delay && *since_pause >= units) {
            *since_pause = 0;
            b->pause = delay;   /* retire the batch first, so progress shows while we wait */
        }
        if (b->pause)
            break;
    }
    return false;
}

/* The copy's end in the header and bitmaps: done, or aborted/failed (what is left joins the
 * shadow bitmap and the target is flagged incomplete), or suspended for a close. */
static void end_copy(pt_set *s, int result)
{
    pt_master *m = s->m;
    bool stopped = atomic_load(&s->stop_req) && !result;
    pthread_rwlock_wrlock(&m->gate);
    pthread_mutex_lock(&s->meta_mu);
    bool complete = s->C.count == 0;
    /* suspended (setctl.c): the set stays copying, so I/O keeps its redirections; a copy with
     * nothing left ends as done instead */
    bool suspended = stopped && atomic_load(&s->suspend_req);
    if (suspended && complete)
        stopped = suspended = false;
    atomic_store(&s->left_end, s->C.count);
    if (!stopped) {
        if (!complete)   /* aborted or failed: what was not copied still differs */
            pt_bits_or(&s->D, &s->C, pt_image_mark, &s->img);
        s->pflags &= ~(PT_PF_COPYING | PT_PF_SUSPENDED | PT_PF_SIBLINGS);
        if (complete)
            s->pflags &= ~PT_PF_INCOMPLETE;
        else
            s->pflags |= PT_PF_INCOMPLETE;
        s->hdr_dirty = true;
    }
    if (suspended) {
        s->pflags |= PT_PF_SUSPENDED;
        s->hdr_dirty = true;
    } else {
        PT_STORE(s->copying, false);
    }
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
}

static void finish(pt_set *s, int result)
{
    end_copy(s, result);
    pthread_mutex_lock(&s->ctl_mu);
    PT_STORE(s->thr_done, true);
    pthread_cond_broadcast(&s->ctl_cv);
    pt_done_signal(s);   /* after thr_done: whoever the descriptor wakes sees the copy over */
    pthread_mutex_unlock(&s->ctl_mu);
}

void pt_copier_abort_locked(pt_set *s)
{
    atomic_store(&s->abort_req, 1);
    pthread_cond_broadcast(&s->ctl_cv);   /* wakes a throttle pause */
    while (!s->thr_done)
        pthread_cond_wait(&s->ctl_cv, &s->ctl_mu);
    pt_copier_reap(s);
}

void pt_copy_end_held(pt_set *s)
{
    atomic_store(&s->total, s->C.count);
    end_copy(s, 0);
}

static void *copier(void *arg)
{
    pt_set *s = arg;
    uint64_t maxrun = PT_IO_MAX >> s->cshift;
    if (maxrun == 0)
        maxrun = 1;
    pool *p = calloc(1, sizeof *p);
    int rc = p ? pool_init(p, s, (size_t)(maxrun << s->cshift)) : -ENOMEM;
    bool live = rc == 0;
    int head = 0, nout = 0;   /* the batches under way: p->b[head], the next nout - 1 after it */
    uint64_t pos = 0, since_pause = 0, since_flush = 0, fetched = 0;
    unsigned recounts = 0;
    while (live && !rc && !stopping(p)) {
        if (nout == NBATCH) {   /* the oldest batch syncs while the others move */
            rc = complete(p, &p->b[head], &since_flush);
            head = (head + 1) % NBATCH;
            nout--;
            if (rc)
                break;
        }
        batch *b = &p->b[(head + nout) % NBATCH];
        bool end = fill(p, b, &pos, &since_pause, &fetched, maxrun);
        if (b->nruns) {
            nout++;
            recounts = 0;
        }
        /* the throttle pauses with nothing in flight; the scan goes round again only once
         * every batch is retired */
        for (; (b->pause || end) && nout && !rc; head = (head + 1) % NBATCH, nout--)
            rc = complete(p, &p->b[head], &since_flush);
        if (rc)
            break;
        if (b->pause)
            pause_ms(s, b->pause);
        if (!end || b->nruns)
            continue;
        if (s->C.count == 0 || stopping(p))
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
    }
    /* what is under way ends (skipped when stopping) and what was moved is retired */
    for (; nout; head = (head + 1) % NBATCH, nout--) {
        int r = complete(p, &p->b[head], &since_flush);
        if (!rc)
            rc = r;
    }
    if (live)
        pool_destroy(p);
    free(p);
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

/* Resume a copy recorded in the header (after open). Caller holds ctl_mu. A restore with other
 * sets on its master is only held: the master reads as restored at once, but its copier would
 * write the master before the other sets, opened after this one, could keep their points in
 * time; the caller resumes it once they are open (PT_F_RESTORE_HELD). */
int pt_copy_start_locked(pt_set *s, pt_error *err)
{
    pthread_rwlock_wrlock(&s->m->gate);
    PT_STORE(s->dir, (s->pflags & PT_PF_TO_MASTER) ? PT_TO_MASTER : PT_TO_SHADOW);
    PT_STORE(s->copying, true);
    pthread_rwlock_unlock(&s->m->gate);
    if ((s->pflags & PT_PF_TO_MASTER) && (s->pflags & PT_PF_SIBLINGS)) {
        PT_STORE(s->held, true);
        return 0;
    }
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

