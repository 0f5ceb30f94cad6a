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

int pt_import_check_master(const pt_set *s, bool imported, pt_error *err)
{
    const pt_master *m = s->m;
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
