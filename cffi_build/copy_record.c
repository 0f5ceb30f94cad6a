/* What a point in time records in each set, in the steps copy.c orders: the copy bits set
 * before the gates (precommit), the copy recorded in the header with its bits (phase 1, the
 * commit point, rolled back on every set if one fails), the shadow bitmap cleared (phase 2),
 * and the sets' bitmaps flushed in parallel between the steps. Also what an update with
 * nothing to do reports instead. Calls only meta.c, chunk.c and bits.c (see internal.h).
 */
#include <pthread.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum pt_action pt_copy_plan(const pt_set *s, int dir)
{
    return (s->kind == PT_DEPENDENT && dir == PT_TO_SHADOW) ? PT_A_NEW_PIT : PT_A_COPY;
}

/* ---- flushing several sets at once ---- */

struct pt_flush_job {
    pt_set *s;
    int rc;
    bool threaded;
    pthread_t thr;
};

static void *flush_thread(void *arg)
{
    struct pt_flush_job *j = arg;
    j->rc = pt_meta_flush(j->s);
    return NULL;
}

/* Flushes the n sets' bitmaps in parallel: a flush is mostly waiting for the disk, and n of
 * them in a row would hold the gates n times as long. Where a thread cannot start, its flush
 * runs here; nothing is lost but the overlap. */
static void flush_all(struct pt_flush_job *jobs, int n)
{
    for (int i = 1; i < n; i++)
        jobs[i].threaded = !jobs[i].s->bitmap_mem &&
                           pthread_create(&jobs[i].thr, NULL, flush_thread, &jobs[i]) == 0;
    for (int i = 0; i < n; i++)
        if (!jobs[i].threaded)
            jobs[i].rc = pt_meta_flush(jobs[i].s);
    for (int i = 1; i < n; i++)
        if (jobs[i].threaded)
            (void)pthread_join(jobs[i].thr, NULL);   /* fails only for a bad handle */
}

int pt_freeze_alloc(pt_freeze *f)
{
    f->jobs = calloc((size_t)f->n, sizeof *f->jobs);
    f->saved = calloc((size_t)f->n, sizeof *f->saved);
    if (!f->jobs || !f->saved) {
        pt_freeze_free(f);
        return -ENOMEM;
    }
    return 0;
}

void pt_freeze_free(pt_freeze *f)
{
    free(f->jobs);
    free(f->saved);
    f->jobs = NULL;
    f->saved = NULL;
}

/* ---- the steps, one set ---- */

/* Before the gates: the copy bits known now (all of them for a full copy), made durable. Copy
 * bits the header does not record a copy for are folded back into the shadow bitmap by the next
 * open, so a crash after this costs copying, never correctness; phase 1 ORs again under the
 * gate for the bits set meanwhile. A failed flush takes the bitmap offline: phase 1 then fails
 * and rolls back. */
static void precommit(pt_set *s, int full)
{
    pthread_mutex_lock(&s->meta_mu);
    if (full && s->kind == PT_INDEPENDENT)
        pt_bits_fill(&s->C, pt_image_mark, &s->img);
    else
        pt_bits_or(&s->C, &s->D, pt_image_mark, &s->img);
    pthread_mutex_unlock(&s->meta_mu);
}

/* phase 1, in memory: the copy recorded and its bits set; the caller flushes. Caller holds the
 * gate exclusive. Returns the flags to restore if the flush fails. */
static uint32_t phase1_mark(pt_set *s, int dir, int full)
{
    pthread_mutex_lock(&s->meta_mu);
    uint32_t saved = s->pflags;
    s->pflags |= PT_PF_COPYING;
    if (dir == PT_TO_MASTER)
        s->pflags |= PT_PF_TO_MASTER;
    else
        s->pflags &= ~PT_PF_TO_MASTER;
    /* a restore with siblings is held at the next open, not resumed (PT_F_RESTORE_HELD);
     * nsets is stable: the caller holds the gate exclusive */
    if (dir == PT_TO_MASTER && s->m->nsets > 1)
        s->pflags |= PT_PF_SIBLINGS;
    else
        s->pflags &= ~PT_PF_SIBLINGS;
    s->hdr_dirty = true;
    if (full && s->kind == PT_INDEPENDENT)
        pt_bits_fill(&s->C, pt_image_mark, &s->img);
    else
        pt_bits_or(&s->C, &s->D, pt_image_mark, &s->img);
    pthread_mutex_unlock(&s->meta_mu);
    return saved;
}

/* phase 1's flush failed on this set: back to the flags it had, no copy bits */
static void phase1_rollback(pt_set *s, uint32_t saved)
{
    pthread_mutex_lock(&s->meta_mu);
    s->pflags = saved;
    pt_bits_zero(&s->C, pt_image_mark, &s->img);
    pthread_mutex_unlock(&s->meta_mu);
}

/* A start refused under the gates: the precommit's copy bits go (the shadow bitmap still has
 * every chunk that differs; the next flush writes the cleared pages). */
static void drop_precommit(pt_set *s)
{
    pthread_mutex_lock(&s->meta_mu);
    pt_bits_zero(&s->C, pt_image_mark, &s->img);
    pthread_mutex_unlock(&s->meta_mu);
}

static void undo_phase1(pt_set *s)
{
    pthread_mutex_lock(&s->meta_mu);
    s->pflags &= ~PT_PF_COPYING;
    s->hdr_dirty = true;
    pt_bits_zero(&s->C, pt_image_mark, &s->img);
    pthread_mutex_unlock(&s->meta_mu);
    (void)pt_meta_flush(s);   /* a failure takes the bitmap offline: a reset rewrites it */
}

static void phase2(pt_set *s, enum pt_action a, int dir)
{
    pthread_mutex_lock(&s->meta_mu);
    if (a == PT_A_NEW_PIT) {
        for (uint64_t c = pt_bits_next(&s->D, 0); s->compact && c < s->nchunks;
             c = pt_bits_next(&s->D, c + 1))
            pt_slot_free(s, c);
        s->pflags &= ~(PT_PF_OUT_OF_SPACE | PT_PF_INCOMPLETE | PT_PF_SPILLED);
        s->lost = 0;
        s->hdr_dirty = true;
    }
    pt_bits_zero(&s->D, pt_image_mark, &s->img);
    pthread_mutex_unlock(&s->meta_mu);
    if (a == PT_A_COPY) {
        PT_STORE(s->copying, true);
        PT_STORE(s->dir, dir);
    }
}

/* ---- the steps, every set of a freeze ---- */

void pt_precommit_all(pt_freeze *f)
{
    int nj = 0;
    for (int i = 0; i < f->n; i++)
        if (pt_copy_plan(f->sets[i], f->dir) == PT_A_COPY) {
            precommit(f->sets[i], f->full);
            f->jobs[nj++] = (struct pt_flush_job){.s = f->sets[i]};
        }
    flush_all(f->jobs, nj);   /* failures show again in phase 1, which rolls back */
}

/* Phase 1 on every set that copies, their flushes in parallel: the commit point. On a failure
 * every set is rolled back (the failed ones in memory; the others also on disk) and the first
 * failure is reported. Caller holds the gates exclusive. */
int pt_phase1_all(pt_freeze *f, pt_error *err)
{
    int nj = 0;
    for (int i = 0; i < f->n; i++)
        if (pt_copy_plan(f->sets[i], f->dir) == PT_A_COPY) {
            f->saved[nj] = phase1_mark(f->sets[i], f->dir, f->full);
            f->jobs[nj++] = (struct pt_flush_job){.s = f->sets[i]};
        }
    struct pt_flush_job *jobs = f->jobs;
    flush_all(jobs, nj);
    int rc = 0;
    for (int j = 0; j < nj && !rc; j++)
        if (jobs[j].rc)
            rc = pt_fail(err, -jobs[j].rc, "bitmap volume %s of set %s: cannot record the copy: "
                         "%s", jobs[j].s->bitmap.path, jobs[j].s->name, strerror(-jobs[j].rc));
    for (int j = 0; rc && j < nj; j++) {
        if (jobs[j].rc)
            phase1_rollback(jobs[j].s, f->saved[j]);
        else
            undo_phase1(jobs[j].s);
    }
    return rc;
}

void pt_drop_precommit_all(pt_freeze *f)
{
    for (int i = 0; i < f->n; i++)
        if (pt_copy_plan(f->sets[i], f->dir) == PT_A_COPY)   /* no copy records these bits */
            drop_precommit(f->sets[i]);
}

void pt_phase2_all(pt_freeze *f)
{
    for (int i = 0; i < f->n; i++)
        phase2(f->sets[i], pt_copy_plan(f->sets[i], f->dir), f->dir);
}

void pt_flush_sets(pt_freeze *f)
{
    for (int i = 0; i < f->n; i++)
        f->jobs[i] = (struct pt_flush_job){.s = f->sets[i]};
    flush_all(f->jobs, f->n);
}

/* ---- updates with nothing to do ---- */

/* An update that has nothing to move or record: no bit differs, no copy is unfinished, and a
 * new dependent point in time would change nothing. Caller holds ctl_mu. */
bool pt_nothing_to_do(pt_set *s, int dir)
{
    uint32_t keep = pt_copy_plan(s, dir) == PT_A_NEW_PIT
                        ? PT_PF_OUT_OF_SPACE | PT_PF_INCOMPLETE | PT_PF_SPILLED
                        : PT_PF_COPYING | PT_PF_INCOMPLETE | PT_PF_NEED_RESYNC;
    pthread_mutex_lock(&s->meta_mu);
    bool none = s->D.count == 0 && s->C.count == 0 && s->lost == 0 && !(s->pflags & keep);
    pthread_mutex_unlock(&s->meta_mu);
    return none;
}

/* Every set reports an empty copy, over at once. */
void pt_report_empty(pt_set **sets, int n)
{
    uint64_t now = pt_now_ns();
    for (int i = 0; i < n; i++) {
        pt_set *s = sets[i];
        atomic_store(&s->abort_req, 0);
        atomic_store(&s->result, 0);
        atomic_store(&s->total, 0);
        atomic_store(&s->left_end, 0);
        atomic_store(&s->start_ns, now);
        atomic_store(&s->end_ns, now);
    }
}
