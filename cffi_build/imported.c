/* Imported shadows: a shadow another host exported, served here with a bitmap of every chunk
 * written here, for the exporting host's join (pt_set_join).
 *
 * An imported set is a set of kind PT_IMPORTED whose one volume is opened as its master and
 * which has no shadow volume. Writes take the master's path (io.c): the set's shadow bit is
 * durable in the bitmap before the write is issued, the rule every master write follows, so
 * after any crash no chunk written here is missing from the bitmap. Users reach the volume
 * through the PT_SHADOW side (it is the exporting set's shadow); nothing copies into or out
 * of it here. Release writes the final "released" header, which join accepts and no open does;
 * the close that follows frees the handle.
 *
 * Top layer (see the layering in internal.h), beside set.c; the rules io.c and copy.c apply
 * are inline in internal.h.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

int pt_import_check(pt_set *s, const pt_open_args *a, pt_error *err)
{
    const pt_master *m = s->m;
    bool imported = a->imported;
    uint32_t kind, state;
    if (a->cfg && !s->bitmap_mem && pt_meta_peek(&s->bitmap, &kind, &state) == 0 &&
        kind == PT_IMPORTED && state == PT_STATE_RELEASED)
        return pt_fail(err, PT_E_IN_USE, "bitmap volume %s holds a released imported shadow "
                       "that was not joined yet: join it on the host that exported the shadow "
                       "first", s->bitmap.path);
    if (imported && m->nsets)
        return pt_fail(err, PT_E_IN_USE, "volume %s is already the master of set %s; an "
                       "imported shadow cannot be shared", m->vol.path, m->sets[0]->name);
    if (!imported && m->nsets && m->sets[0]->kind == PT_IMPORTED)
        return pt_fail(err, PT_E_IN_USE, "master volume %s is the imported shadow %s",
                       m->vol.path, m->sets[0]->name);
    return 0;
}

int pt_import_create(pt_engine *eng, const pt_volspec *volume, const pt_volspec *bitmap,
                     uint32_t chunk_size, pt_set **out, pt_error *err)
{
    if (!volume || !bitmap)
        return pt_fail(err, PT_E_INVALID, "an imported shadow needs its volume and a bitmap "
                       "volume");
    pt_set_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = PT_IMPORTED;
    cfg.chunk_size = chunk_size;
    pt_open_args a = {volume, NULL, bitmap, &cfg, NULL, true};
    return pt_set_setup(eng, &a, out, err);
}

int pt_import_open(pt_engine *eng, const pt_volspec *volume, const pt_volspec *bitmap,
                   pt_set **out, pt_error *err)
{
    if (!volume || !bitmap)
        return pt_fail(err, PT_E_INVALID, "an imported shadow needs its volume and a bitmap "
                       "volume");
    pt_open_args a = {volume, NULL, bitmap, NULL, NULL, true};
    return pt_set_setup(eng, &a, out, err);
}

int pt_import_release(pt_set *s, pt_error *err)
{
    if (s->kind != PT_IMPORTED)
        return pt_fail(err, PT_E_WRONG_KIND, "set %s is not an imported shadow; only those are "
                       "released", s->name);
    if (atomic_load(&s->retired))
        return 0;
    unsigned off = atomic_load(&s->rflags) & PT_OFFLINE_MASK;
    if (off)
        return pt_fail(err, PT_E_OFFLINE, "a volume of the imported shadow %s is offline: its "
                       "bitmap may miss writes, so it is not released", s->name);
    /* no write starts from here on (pt_import_side); one in flight has its bit durable
     * before its data, and its data is synced by the close that follows */
    atomic_store(&s->retired, 1);
    int rc = pt_vol_sync(&s->m->vol);
    if (rc) {
        rc = pt_fail(err, -rc, "volume %s: flush failed: %s", s->m->vol.path, strerror(-rc));
        goto out_unretire;
    }
    rc = pt_meta_flush(s);
    if (rc) {
        rc = pt_fail(err, -rc, "bitmap volume %s: flush failed: %s", s->bitmap.path,
                     strerror(-rc));
        goto out_unretire;
    }
    /* final: every later header write (the close's) records it too */
    rc = pt_meta_write_header(s, PT_STATE_RELEASED, err);
    if (rc)
        goto out_unretire;
    return 0;

out_unretire:
    atomic_store(&s->retired, 0);
    return rc;
}

int pt_set_export(pt_set *s, pt_error *err)
{
    if (s->kind != PT_INDEPENDENT)
        return pt_fail(err, PT_E_WRONG_KIND, "set %s is not independent: only an independent "
                       "shadow holds its point in time alone and can be exported", s->name);
    pthread_mutex_lock(&s->ctl_mu);
    pt_copier_reap(s);
    int rc = 0;
    pthread_mutex_lock(&s->meta_mu);
    uint32_t pf = s->pflags;
    pthread_mutex_unlock(&s->meta_mu);
    if (pf & PT_PF_EXPORTED)
        goto out_unlock;
    if (PT_LOAD(s->copying) || s->thr_live || s->held)
        rc = pt_fail(err, PT_E_COPY_IN_PROGRESS, "set %s is copying (or its copy is suspended); "
                     "its shadow can be exported once the copy is complete", s->name);
    else if (pf & PT_PF_INCOMPLETE)
        rc = pt_fail(err, PT_E_INCOMPLETE, "the %s of set %s was left incomplete by an aborted "
                     "copy; update it first", (pf & PT_PF_TO_MASTER) ? "master" : "shadow",
                     s->name);
    else if (atomic_load(&s->rflags) & PT_OFFLINE_MASK)
        rc = pt_fail(err, PT_E_OFFLINE, "a volume of set %s is offline; reset the set first",
                     s->name);
    else if (pf & PT_PF_OUT_OF_SPACE)
        rc = pt_fail(err, PT_E_OUT_OF_SPACE, "set %s lost chunks; update it first", s->name);
    if (rc)
        goto out_unlock;
    /* no copy can start while ctl_mu is held; the flag is durable before the call returns */
    pthread_mutex_lock(&s->meta_mu);
    s->pflags |= PT_PF_EXPORTED;
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    atomic_fetch_or(&s->rflags, PT_F_EXPORTED);
    int r = pt_meta_flush(s);
    if (r) {
        pthread_mutex_lock(&s->meta_mu);
        s->pflags &= ~PT_PF_EXPORTED;
        pthread_mutex_unlock(&s->meta_mu);
        atomic_fetch_and(&s->rflags, ~PT_F_EXPORTED);
        rc = pt_fail(err, -r, "bitmap volume %s: cannot record the export: %s", s->bitmap.path,
                     strerror(-r));
    }
out_unlock:
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}
