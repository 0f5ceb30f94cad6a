/* A group point in time held across calls: pt_group_hold freezes, pt_group_release takes it or
 * not. A coordinator freezing several hosts drives these: every member frozen before any point
 * in time is taken.
 *
 * The gates are rwlocks, which only the thread that locked them may unlock, and a hold outlives
 * the call that made it: so each hold has a holder thread that freezes (copy.c's
 * pt_freeze_locked), waits for the decision or the deadline, then ends the freeze and starts the
 * copies. The deadline is the watchdog: a coordinator that never comes back cannot leave
 * writers frozen past it. Between the calls the sets' ctl_mu is not held (a close must be able
 * to end the hold); s->hold marks them instead, and copy starts, resets, other holds and retire
 * refuse a held set.
 *
 * Lifetime: refs counts the caller's handle (dropped by pt_group_release) and any close
 * waiting on the hold (pt_hold_drop_set); the last drop frees. The holder thread is joined by
 * pt_group_release.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

enum hold_state { H_FREEZING, H_HELD, H_DONE };
enum hold_end { E_NONE, E_RELEASED, E_EXPIRED, E_CLOSED };

struct pt_hold {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* protected by mu */
    int refs;
    enum hold_state state;
    enum hold_end end;      /* who decided */
    int commit;
    int rc;                 /* the freeze's result, then the release's */
    pt_error err;
    /* the holder thread's (read by others once state is H_DONE) */
    pthread_t thr;
    int64_t owner;
    int timeout_ms;
    pt_freeze f;
};

static void hold_put(pt_hold *h)
{
    pthread_mutex_lock(&h->mu);
    bool last = --h->refs == 0;
    pthread_mutex_unlock(&h->mu);
    if (!last)
        return;
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h->f.sets);
    free(h);
}

static void hold_done(pt_hold *h, int rc, const pt_error *err)
{
    pthread_mutex_lock(&h->mu);
    h->state = H_DONE;
    h->rc = rc;
    if (rc && err)
        h->err = *err;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void *holder(void *arg)
{
    pt_hold *h = arg;
    pt_freeze *f = &h->f;
    pt_error err = {0};
    pt_sets_lock(f->sets, f->n);
    int rc = pt_freeze_locked(f, h->owner, false, &err);
    for (int i = 0; !rc && i < f->n; i++)
        PT_STORE(f->sets[i]->hold, h);
    pt_sets_unlock(f->sets, f->n);
    if (rc) {
        hold_done(h, rc, &err);
        return NULL;
    }
    struct timespec dl = pt_deadline_ms((uint64_t)h->timeout_ms);
    pthread_mutex_lock(&h->mu);
    h->state = H_HELD;
    pthread_cond_broadcast(&h->cv);
    while (h->end == E_NONE)
        if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT && h->end == E_NONE)
            h->end = E_EXPIRED;
    int commit = h->end == E_RELEASED && h->commit;
    pthread_mutex_unlock(&h->mu);
    rc = pt_freeze_end(f, commit, &err);
    pt_sets_lock(f->sets, f->n);   /* no gate held: ctl_mu comes first in the lock order */
    for (int i = 0; i < f->n; i++)
        PT_STORE(f->sets[i]->hold, NULL);
    int r2 = pt_freeze_start_locked(f, rc ? NULL : &err);
    pt_sets_unlock(f->sets, f->n);
    hold_done(h, rc ? rc : r2, &err);
    return NULL;
}

int pt_group_hold(pt_set *const *in, int n, int dir, int full, int64_t owner, int timeout_ms,
                  pt_hold **out, pt_error *err)
{
    if (timeout_ms < 1 || timeout_ms > 600000)
        return pt_fail(err, PT_E_INVALID, "a hold's timeout is %d ms; it must be 1 to 600000",
                       timeout_ms);
    pt_set **sets;
    int rc = pt_group_sets(in, n, dir, &sets, err);
    if (rc)
        return rc;
    pt_hold *h = calloc(1, sizeof *h);
    if (!h) {
        free(sets);
        return pt_fail(err, ENOMEM, "out of memory");
    }
    h->refs = 1;
    h->owner = owner;
    h->timeout_ms = timeout_ms;
    h->f = (pt_freeze){.sets = sets, .n = n, .dir = dir, .full = full != 0};
    if ((rc = pthread_mutex_init(&h->mu, NULL)) != 0)
        goto out_free;
    if ((rc = pt_cond_init_monotonic(&h->cv)) != 0)
        goto out_mu;
    if ((rc = pthread_create(&h->thr, NULL, holder, h)) != 0)
        goto out_cv;
    pthread_mutex_lock(&h->mu);
    while (h->state == H_FREEZING)
        pthread_cond_wait(&h->cv, &h->mu);
    rc = h->state == H_DONE ? h->rc : 0;   /* DONE before HELD: the freeze refused */
    pthread_mutex_unlock(&h->mu);
    if (!rc) {
        *out = h;
        return 0;
    }
    (void)pthread_join(h->thr, NULL);   /* fails only for a bad handle */
    if (err)
        *err = h->err;
    hold_put(h);
    return rc;
out_cv:
    pthread_cond_destroy(&h->cv);
out_mu:
    pthread_mutex_destroy(&h->mu);
out_free:
    free(sets);
    free(h);
    return pt_fail(err, rc, "cannot start a hold: %s", strerror(rc));
}

int pt_group_release(pt_hold *h, int commit, uint64_t *frozen_ns, pt_error *err)
{
    if (!h)
        return pt_fail(err, PT_E_INVALID, "no hold given");
    pthread_mutex_lock(&h->mu);
    if (h->end == E_NONE) {
        h->end = E_RELEASED;
        h->commit = commit != 0;
        pthread_cond_broadcast(&h->cv);
    }
    while (h->state != H_DONE)
        pthread_cond_wait(&h->cv, &h->mu);
    enum hold_end end = h->end;
    int rc = h->rc;
    pt_error e = h->err;
    uint64_t held = h->f.frozen_ns;
    int timeout_ms = h->timeout_ms;
    pthread_mutex_unlock(&h->mu);
    (void)pthread_join(h->thr, NULL);   /* fails only for a bad handle */
    hold_put(h);
    if (frozen_ns)
        *frozen_ns = held;
    if (end == E_EXPIRED)
        return pt_fail(err, PT_E_TIMEOUT, "the hold was not released within %d ms: every set "
                       "was thawed without a new point in time", timeout_ms);
    if (end == E_CLOSED)
        return pt_fail(err, PT_E_CLOSED, "a set of the hold was closed: every set was thawed "
                       "without a new point in time");
    if (rc && err)
        *err = e;
    return rc;
}

void pt_hold_drop_set(pt_set *s)
{
    pthread_mutex_lock(&s->ctl_mu);
    pt_hold *h = PT_LOAD(s->hold);
    if (h) {   /* s->hold is cleared under ctl_mu before the last put can free h */
        pthread_mutex_lock(&h->mu);
        h->refs++;
        pthread_mutex_unlock(&h->mu);
    }
    pthread_mutex_unlock(&s->ctl_mu);
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    if (h->end == E_NONE) {
        h->end = E_CLOSED;
        pthread_cond_broadcast(&h->cv);
    }
    while (h->state != H_DONE)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    hold_put(h);
}
