/* Reset: offline volumes brought back and the resync they need started (a full copy at one
 * point in time, copy.c's pt_start_locked). */
#include <errno.h>
#include <string.h>

#include "internal.h"

static int probe(pt_vol *v)
{
    uint8_t b[512];
    if (v->fd < 0)
        return 0;
    int rc = pt_vol_pread(v, b, v->size < sizeof b ? (size_t)v->size : sizeof b, 0);
    if (!rc)
        atomic_store(&v->offline, 0);
    return rc;
}

/* Brings the offline volumes back: each must read again; the bitmap, if it was offline, is
 * written whole (nobody knows which of its pages landed). f: the offline flags. */
static int bring_back(pt_set *s, unsigned f, pt_error *err)
{
    pt_vol *vols[4] = {&s->m->vol, &s->shadow, s->bitmap_mem ? NULL : &s->bitmap,
                       s->ov ? &s->ov->vol : NULL};
    int rc;
    for (int i = 0; i < 4; i++)
        if (vols[i] && (rc = probe(vols[i])) != 0)
            return pt_fail(err, PT_E_OFFLINE, "%s volume %s of set %s still fails: %s",
                           vols[i]->role, vols[i]->path, s->name, strerror(-rc));
    atomic_fetch_and(&s->rflags, ~PT_OFFLINE_MASK);
    pthread_mutex_lock(&s->meta_mu);
    s->pflags &= ~PT_PF_NEED_RESYNC;   /* recorded by the flush below or phase 1 */
    if (f & PT_F_BITMAP_OFFLINE) {
        s->img.ndirty = UINT64_MAX;
        s->hdr_dirty = true;
    }
    pthread_mutex_unlock(&s->meta_mu);
    if ((f & PT_F_BITMAP_OFFLINE) && (rc = pt_meta_flush(s)) != 0)
        return pt_fail(err, -rc, "bitmap volume %s still fails", s->bitmap.path);
    return 0;
}

int pt_set_reset(pt_set *s, int64_t owner, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    pt_copier_reap(s);
    int rc = 0;
    unsigned f = atomic_load(&s->rflags) & PT_OFFLINE_MASK;
    pthread_mutex_lock(&s->meta_mu);
    uint32_t pf = s->pflags;
    pthread_mutex_unlock(&s->meta_mu);
    if (atomic_load(&s->retired))
        rc = pt_fail(err, PT_E_CLOSED, "set %s is being disabled", s->name);
    else if (s->kind == PT_IMPORTED || (atomic_load(&s->rflags) & PT_F_EXPORTED))
        rc = s->kind == PT_IMPORTED ? pt_import_refuse(s, "reset", err)
                                    : pt_export_refuse(s, "reset", err);
    else if (s->lock_owner && s->lock_owner != owner)
        rc = pt_fail(err, PT_E_IN_USE, "set %s is locked by %lld", s->name,
                     (long long)s->lock_owner);
    else if (s->thr_live || s->held)
        rc = pt_fail(err, PT_E_COPY_IN_PROGRESS, "set %s is copying; abort it first", s->name);
    else if (PT_LOAD(s->hold))
        rc = pt_fail(err, PT_E_IN_USE, "set %s is held for a group point in time", s->name);
    if (rc || (!f && !(pf & PT_PF_OUT_OF_SPACE)))
        goto out_unlock;   /* refused, or nothing offline, nothing lost: nothing to do */
    rc = bring_back(s, f, err);
    if (rc)
        goto out_unlock;
    bool restore = (pf & PT_PF_TO_MASTER) && (f & PT_F_MASTER_OFFLINE) &&
                   (pf & (PT_PF_COPYING | PT_PF_INCOMPLETE));
    int dir = restore ? PT_TO_MASTER : PT_TO_SHADOW;
    if (!restore && s->kind == PT_DEPENDENT) {
        pthread_mutex_lock(&s->meta_mu);
        s->pflags &= ~PT_PF_INCOMPLETE;
        pthread_mutex_unlock(&s->meta_mu);
    }
    pt_set *one[1] = {s};
    rc = pt_start_locked(one, 1, dir, 1, owner, true, NULL, err);
out_unlock:
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}
