/* Copies and updates: starting them at one point in time (one set or a group), abort, wait
 * and progress (reset: reset.c). The copier thread that then moves the chunks is copier.c;
 * what each step below records in a set (bits, header flags, their flushes) is copy_record.c.
 *
 * Starting fixes the point in time with every involved master's gate held exclusive:
 *   phase 1 records the copy in the header and ORs the shadow bitmap into the copy bitmap,
 *           then flushes: this is the commit point; a failure here is rolled back on every set;
 *   phase 2 clears the shadow bitmaps and flushes (a failure here only leaves extra bits set,
 *           which costs copying, never correctness).
 * Writers wait while the gates are held, so the work under them is kept small: before taking
 * them the copy bits known so far are set and made durable (a precommit), so phase 1 writes
 * little more than each header, and the sets' flushes run in parallel, not one after another.
 * The three steps (freeze, end, start: pt_freeze_*) are apart so that a group hold
 * (group_hold.c) can spread them over calls: freeze now, take the point in time or not later.
 */
#include <pthread.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* ---- starting copies ---- */

/* Another set of s's master that a restore (copy to the master) runs from, or NULL. Caller
 * holds the gate (m->sets changes only under it exclusive; copying likewise). */
static pt_set *restore_running(const pt_set *s)
{
    pt_master *m = s->m;
    for (int i = 0; i < m->nsets; i++) {
        pt_set *x = m->sets[i];
        if (x != s && x->copying && x->dir == PT_TO_MASTER)
            return x;
    }
    return NULL;
}

/* While a restore runs, the master's logical image (what it reads as) is ahead of the volume:
 * chunks not yet restored still hold the old data there. A new point in time taken of it then
 * (a copy or update to another shadow, another restore) would read the volume and get a mix,
 * so it waits for the restore. Caller holds s's master's gate (shared or exclusive). */
static int check_restores(pt_set *s, int dir, pt_error *err)
{
    pt_set *x = restore_running(s);
    if (x)
        return pt_fail(err, PT_E_COPY_IN_PROGRESS,
                       "master %s is being restored from set %s; wait for that restore to end "
                       "before %s set %s", s->m->vol.path, x->name,
                       dir == PT_TO_MASTER ? "restoring it from" : "updating", s->name);
    return 0;
}

static int check_restores_shared(pt_set *s, int dir, pt_error *err)
{
    pthread_rwlock_rdlock(&s->m->gate);
    int rc = check_restores(s, dir, err);
    pthread_rwlock_unlock(&s->m->gate);
    return rc;
}

/* A group restores each master from one of its shadows only. sets: sorted, n of them. */
static int check_group_masters(pt_set *const *sets, int n, int dir, pt_error *err)
{
    for (int i = 0; dir == PT_TO_MASTER && i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (sets[i]->m == sets[j]->m)
                return pt_fail(err, PT_E_INVALID, "sets %s and %s share master %s: a group "
                               "restores a master from one of its shadows only",
                               sets[i]->name, sets[j]->name, sets[i]->m->vol.path);
    return 0;
}

static int check_can_copy(pt_set *s, int dir, int64_t owner, pt_error *err)
{
    pt_copier_reap(s);
    if (atomic_load(&s->retired))
        return pt_fail(err, PT_E_CLOSED, "set %s is being disabled", s->name);
    if (atomic_load(&s->closing))
        return pt_fail(err, PT_E_CLOSED, "set %s is being closed", s->name);
    if (s->lock_owner && s->lock_owner != owner)
        return pt_fail(err, PT_E_IN_USE, "set %s is locked by %lld", s->name,
                       (long long)s->lock_owner);
    if (PT_LOAD(s->hold))
        return pt_fail(err, PT_E_IN_USE, "set %s is held for a group point in time; wait for "
                       "that hold to be released", s->name);
    if (s->held)
        return pt_fail(err, PT_E_COPY_IN_PROGRESS,
                       "set %s holds a restore interrupted by a restart; resume it (a copy or "
                       "update of this set alone to the master) or abort it", s->name);
    if (s->thr_live || s->copying)
        return pt_fail(err, PT_E_COPY_IN_PROGRESS,
                       "set %s is already copying; wait for it or abort it", s->name);
    unsigned f = atomic_load(&s->rflags) & PT_OFFLINE_MASK;
    if (f)
        return pt_fail(err, PT_E_OFFLINE, "a volume of set %s is offline; reset the set first",
                       s->name);
    pthread_mutex_lock(&s->meta_mu);
    uint32_t pf = s->pflags;
    pthread_mutex_unlock(&s->meta_mu);
    bool last_to_master = pf & PT_PF_TO_MASTER;
    if (dir == PT_TO_MASTER) {
        /* kernel path: only through the master's device stack (pt_set_copy_target) */
        if (s->m->nsets > 1 && atomic_load(&s->eng->defer_copies) && !s->has_dst)
            return pt_fail(err, PT_E_DEPENDENCY,
                           "master %s has %d shadows; on the kernel data path a restore writes "
                           "the raw master, past the other sets' copy-on-write and change "
                           "tracking, unless it is given the master's device stack as its "
                           "copy target", s->m->vol.path, s->m->nsets);
        if (pf & PT_PF_OUT_OF_SPACE)
            return pt_fail(err, PT_E_OUT_OF_SPACE,
                           "shadow of set %s lost chunks when it ran out of space; it cannot "
                           "be copied to the master", s->name);
        if ((pf & PT_PF_INCOMPLETE) && !last_to_master)
            return pt_fail(err, PT_E_INCOMPLETE,
                           "shadow of set %s was left incomplete by an aborted copy; update "
                           "it from the master first", s->name);
    } else if ((pf & PT_PF_INCOMPLETE) && last_to_master) {
        return pt_fail(err, PT_E_INCOMPLETE,
                       "master of set %s was left incomplete by an aborted restore; finish it "
                       "with an update to the master first", s->name);
    }
    return check_restores_shared(s, dir, err);
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

/* Before the gates: each set can take part (unless checked), and the precommit, durable.
 * Then the gates of every involved master, exclusive: writers wait from here on. 0: the
 * gates are held; otherwise nothing changed and no gate is held. Caller holds every set's
 * ctl_mu; f->sets, n, dir and full are set. */
int pt_freeze_locked(pt_freeze *f, int64_t owner, bool checked, pt_error *err)
{
    pt_set **sets = f->sets;
    int n = f->n, rc;
    for (int i = 0; !checked && i < n; i++)
        if ((rc = check_can_copy(sets[i], f->dir, owner, err)) != 0)
            return rc;
    if (pt_freeze_alloc(f) != 0)
        return pt_fail(err, ENOMEM, "out of memory");
    pt_precommit_all(f);
    f->nm = 0;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < f->nm && !seen; j++)
            seen = f->ms[j] == sets[i]->m;
        if (!seen && f->nm < (int)(sizeof f->ms / sizeof f->ms[0]))
            f->ms[f->nm++] = sets[i]->m;
    }
    qsort(f->ms, (size_t)f->nm, sizeof f->ms[0], cmp_ptr);
    for (int j = 0; j < f->nm; j++)
        pthread_rwlock_wrlock(&f->ms[j]->gate);
    f->t0 = pt_now_ns();
    /* again under the gates: a restore of a sibling may have started since the check */
    rc = 0;
    for (int i = 0; i < n && !rc; i++)
        rc = check_restores(sets[i], f->dir, err);
    if (rc) {
        (void)pt_freeze_end(f, 0, NULL);
        pt_freeze_free(f);
    }
    return rc;
}

/* With the gates held since pt_freeze_locked: commit takes the point in time (phase 1, the
 * commit point, then phase 2); !commit drops the precommit's bits and changes nothing. Then
 * the gates go. On a commit's failure every set is as before. */
int pt_freeze_end(pt_freeze *f, int commit, pt_error *err)
{
    int rc = 0;
    f->empty = false;
    if (commit && !f->full) {   /* an update with nothing to do on any set: no header write */
        f->empty = true;
        for (int i = 0; i < f->n && f->empty; i++)
            f->empty = pt_nothing_to_do(f->sets[i], f->dir);
    }
    if (commit && !f->empty)
        rc = pt_phase1_all(f, err);
    else
        pt_drop_precommit_all(f);
    if (commit && !rc && !f->empty)
        pt_phase2_all(f);
    uint64_t t1 = pt_now_ns();
    for (int j = f->nm - 1; j >= 0; j--)
        pthread_rwlock_unlock(&f->ms[j]->gate);
    f->frozen_ns = t1 - f->t0;
    f->committed = commit && !rc;
    return rc;
}

/* After pt_freeze_end: a committed point in time's phase 2 made durable (a failure only
 * leaves extra bits) and its copies' threads started; frees what the freeze allocated.
 * Caller holds every set's ctl_mu. */
int pt_freeze_start_locked(pt_freeze *f, pt_error *err)
{
    int rc = 0;
    if (f->committed && f->empty)
        pt_report_empty(f->sets, f->n);
    if (f->committed && !f->empty) {
        pt_flush_sets(f);
        for (int i = 0; i < f->n; i++) {
            pt_set *s = f->sets[i];
            if (pt_copy_plan(s, f->dir) == PT_A_COPY && pt_copier_spawn(s, NULL) != 0) {
                pthread_rwlock_wrlock(&s->m->gate);
                PT_STORE(s->copying, false);
                pthread_rwlock_unlock(&s->m->gate);
                pt_fail(err, EAGAIN, "set %s: the copy is recorded but its thread could not "
                        "start; reset the set to resume it", s->name);
                rc = -EAGAIN;
            }
        }
    }
    pt_freeze_free(f);
    return rc;
}

/* The three steps at once. Caller holds every set's ctl_mu. */
int pt_start_locked(pt_set **sets, int n, int dir, int full, int64_t owner, bool checked,
                    uint64_t *frozen_ns, pt_error *err)
{
    pt_freeze f = {.sets = sets, .n = n, .dir = dir, .full = full};
    int rc = pt_freeze_locked(&f, owner, checked, err);
    if (rc)
        return rc;
    rc = pt_freeze_end(&f, 1, err);
    if (frozen_ns)
        *frozen_ns = f.frozen_ns;
    int r2 = pt_freeze_start_locked(&f, rc ? NULL : err);
    return rc ? rc : r2;
}

/* Updates with nothing to do on any set end here, without a header write or a copier thread:
 * each set reports an empty copy, over at once (its copy-end descriptor stays readable). The
 * point in time is the check's; a write racing the call lands after it, as it may. 1: there is
 * work, start it; 0: done; < 0: refused. Caller holds every set's ctl_mu. */
static int update_nothing(pt_set **sets, int n, int dir, int64_t owner, uint64_t *frozen_ns,
                          pt_error *err)
{
    int rc;
    for (int i = 0; i < n; i++)
        if ((rc = check_can_copy(sets[i], dir, owner, err)) != 0)
            return rc;
    for (int i = 0; i < n; i++)
        if (!pt_nothing_to_do(sets[i], dir))
            return 1;
    pt_report_empty(sets, n);
    if (frozen_ns)
        *frozen_ns = 0;
    return 0;
}

/* A held restore (PT_F_RESTORE_HELD) goes on: its copy is recorded and in force already, only
 * its thread starts. Caller holds ctl_mu. */
static int resume_held(pt_set *s, int64_t owner, pt_error *err)
{
    if (atomic_load(&s->retired))
        return pt_fail(err, PT_E_CLOSED, "set %s is being disabled", s->name);
    if (s->lock_owner && s->lock_owner != owner)
        return pt_fail(err, PT_E_IN_USE, "set %s is locked by %lld", s->name,
                       (long long)s->lock_owner);
    PT_STORE(s->held, false);
    int rc = pt_copier_spawn(s, err);
    if (rc)
        PT_STORE(s->held, true);
    return rc;
}

int pt_group_sets(pt_set *const *in, int n, int dir, pt_set ***out, pt_error *err)
{
    if (n <= 0 || n > PT_MAX_SIBLINGS * 4)
        return pt_fail(err, PT_E_INVALID, "a group copy needs between 1 and %d sets",
                       PT_MAX_SIBLINGS * 4);
    if (dir != PT_TO_SHADOW && dir != PT_TO_MASTER)
        return pt_fail(err, PT_E_INVALID, "direction %d is neither to-shadow (0) nor "
                       "to-master (1)", dir);
    pt_set **sets = malloc((size_t)n * sizeof *sets);
    if (!sets)
        return pt_fail(err, ENOMEM, "out of memory");
    memcpy(sets, in, (size_t)n * sizeof *sets);
    qsort(sets, (size_t)n, sizeof *sets, cmp_ptr);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++)
        if ((rc = pt_import_refuse(sets[i], "copied or updated", err)) == 0)
            rc = pt_export_refuse(sets[i], "copied or updated", err);
    for (int i = 1; i < n && !rc; i++)
        if (sets[i] == sets[i - 1])
            rc = pt_fail(err, PT_E_INVALID, "set %s is named twice", sets[i]->name);
    if (!rc)
        rc = check_group_masters(sets, n, dir, err);
    if (rc)
        free(sets);
    else
        *out = sets;
    return rc;
}

void pt_sets_lock(pt_set **sets, int n)
{
    for (int i = 0; i < n; i++)
        pthread_mutex_lock(&sets[i]->ctl_mu);
}

void pt_sets_unlock(pt_set **sets, int n)
{
    for (int i = n - 1; i >= 0; i--)
        pthread_mutex_unlock(&sets[i]->ctl_mu);
}

int pt_group_copy(pt_set *const *in, int n, int dir, int full, int64_t owner,
                  uint64_t *frozen_ns, pt_error *err)
{
    pt_set **sets;
    int rc = pt_group_sets(in, n, dir, &sets, err);
    if (rc)
        return rc;
    pt_sets_lock(sets, n);
    if (n == 1 && dir == PT_TO_MASTER && sets[0]->held)
        rc = resume_held(sets[0], owner, err);
    else
        rc = full ? 1 : update_nothing(sets, n, dir, owner, frozen_ns, err);
    if (rc > 0)   /* an update has been checked already */
        rc = pt_start_locked(sets, n, dir, full, owner, !full, frozen_ns, err);
    pt_sets_unlock(sets, n);
    free(sets);
    return rc;
}

int pt_set_copy(pt_set *s, int direction, int full, int64_t owner, pt_error *err)
{
    return pt_group_copy(&s, 1, direction, full, owner, NULL, err);
}

int pt_set_abort(pt_set *s, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    pt_copier_reap(s);
    int rc = 0;
    if (s->held) {   /* ends as an aborted copy does, without a thread to stop */
        PT_STORE(s->held, false);
        atomic_store(&s->abort_req, 1);
        pt_copy_end_held(s);
        goto out_unlock;
    }
    if (!s->thr_live) {
        rc = pt_fail(err, PT_E_NO_COPY, "set %s has no copy running", s->name);
        goto out_unlock;
    }
    pt_copier_abort_locked(s);
out_unlock:
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_wait(pt_set *s, int timeout_ms, pt_error *err)
{
    struct timespec dl = pt_deadline_ms(timeout_ms >= 0 ? (uint64_t)timeout_ms : 0);
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    /* closing: whoever frees the handle waits for this call to return, so it must not stay
     * asleep on a copy that the close is about to stop */
    while (s->thr_live && !s->thr_done && !rc) {
        if (atomic_load(&s->closing))
            rc = pt_fail(err, PT_E_CLOSED, "set %s is being closed", s->name);
        else if (timeout_ms < 0)
            pthread_cond_wait(&s->ctl_cv, &s->ctl_mu);
        else if (pthread_cond_timedwait(&s->ctl_cv, &s->ctl_mu, &dl) == ETIMEDOUT)
            rc = pt_fail(err, PT_E_TIMEOUT, "set %s is still copying", s->name);
    }
    if (!rc) {
        pt_copier_reap(s);
        int r = atomic_load(&s->result);
        if (r && !atomic_load(&s->abort_req))
            rc = pt_fail(err, r, "the copy of set %s failed: %s; reset the set", s->name,
                         strerror(r < PT_E_INVALID ? r : EIO));
    }
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_progress(pt_set *s, pt_progress *o)
{
    memset(o, 0, sizeof *o);
    /* not under ctl_mu: a reset or copy start holds it across I/O (see internal.h) */
    o->active = PT_LOAD(s->thr_live) && !PT_LOAD(s->thr_done);
    o->direction = PT_LOAD(s->dir);
    o->aborting = atomic_load(&s->abort_req);
    o->result = atomic_load(&s->result);
    uint64_t total = atomic_load(&s->total);
    pthread_mutex_lock(&s->meta_mu);
    uint64_t left = o->active ? s->C.count : atomic_load(&s->left_end);
    pthread_mutex_unlock(&s->meta_mu);
    o->chunks_total = total;
    o->chunks_done = total > left ? total - left : 0;
    o->bytes_total = total << s->cshift;
    o->bytes_done = o->chunks_done << s->cshift;
    uint64_t st = atomic_load(&s->start_ns), en = atomic_load(&s->end_ns);
    if (st) {
        o->elapsed_ns = (en ? en : pt_now_ns()) - st;
        if (o->elapsed_ns)
            o->rate = (uint64_t)((double)o->bytes_done * 1e9 / (double)o->elapsed_ns);
    }
    return 0;
}
