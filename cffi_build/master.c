/* Masters: the volume several sets share, with the gate and chunk stripes its I/O holds; and
 * the check that no volume serves two roles at once.
 *
 * Called by set.c with the engine's mu held; calls only util.c (see the layering in internal.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

int pt_master_key(const pt_volspec *spec, pt_volkey *key, pt_error *err)
{
    if (!spec || !spec->path || !spec->path[0])
        return pt_fail(err, PT_E_INVALID, "no master volume given");
    struct stat st;
    if ((spec->fd >= 0 ? fstat(spec->fd, &st) : stat(spec->path, &st)) != 0)
        return pt_fail(err, errno == ENOENT ? PT_E_NOT_FOUND : errno, "master volume %s: %s",
                       spec->path, strerror(errno));
    key->blk = S_ISBLK(st.st_mode);
    key->dev = key->blk ? st.st_rdev : st.st_dev;
    key->ino = key->blk ? 0 : st.st_ino;
    return 0;
}

static pt_master *master_find(pt_engine *e, const pt_volkey *key)
{
    for (pt_master *m = e->masters; m; m = m->next)
        if (m->vol.is_blk == key->blk && m->vol.dev == key->dev && m->vol.ino == key->ino)
            return m;
    return NULL;
}

/* The gate is writer-preferring, so a freeze is not starved by steady I/O. */
static int gate_init(pthread_rwlock_t *gate)
{
    pthread_rwlockattr_t a;
    int rc = pthread_rwlockattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (rc)
        goto out_attr;
    rc = pthread_rwlock_init(gate, &a);
out_attr:
    (void)pthread_rwlockattr_destroy(&a);
    return rc;
}

static int master_new(pt_engine *e, const pt_volspec *spec, pt_master **out, pt_error *err)
{
    pt_master *m = calloc(1, sizeof *m);
    if (!m)
        return pt_fail(err, ENOMEM, "out of memory");
    int rc = pt_vol_open(&m->vol, spec, "master", err);
    if (rc)
        goto out_free;
    if (gate_init(&m->gate) != 0)
        goto out_no_locks;
    unsigned i;
    for (i = 0; i < PT_STRIPES; i++)
        if (pthread_rwlock_init(&m->stripes[i], NULL) != 0)
            goto out_stripes;
    m->next = e->masters;
    e->masters = m;
    *out = m;
    return 0;

out_stripes:
    while (i--)
        pthread_rwlock_destroy(&m->stripes[i]);
    pthread_rwlock_destroy(&m->gate);
out_no_locks:
    rc = pt_fail(err, EAGAIN, "out of lock resources");
    pt_vol_close(&m->vol);
out_free:
    free(m);
    return rc;
}

int pt_master_get(pt_engine *e, const pt_volspec *spec, const pt_volkey *key, pt_master **out,
                  pt_error *err)
{
    pt_master *m = master_find(e, key);
    if (!m)
        return master_new(e, spec, out, err);
    *out = m;
    return 0;
}

void pt_master_put(pt_engine *e, pt_master *m)
{
    if (m->nsets)
        return;
    for (pt_master **p = &e->masters; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    for (unsigned i = 0; i < PT_STRIPES; i++)
        pthread_rwlock_destroy(&m->stripes[i]);
    pthread_rwlock_destroy(&m->gate);
    pt_vol_close(&m->vol);
    free(m);
}

int pt_check_volumes(pt_engine *e, pt_set *s, pt_master *m, pt_overflow *ov, pt_error *err)
{
    pt_vol *mine[3] = {&m->vol, &s->shadow, &s->bitmap};
    const char *names[3] = {"master", "shadow", "bitmap"};
    for (int i = 0; i < 3; i++) {
        for (int j = i + 1; j < 3; j++)
            if (pt_vol_same(mine[i], mine[j]))
                return pt_fail(err, PT_E_SAME_VOLUME, "%s and %s are the same volume (%s)",
                               names[i], names[j], mine[j]->path);
        if (ov && pt_vol_same(mine[i], &ov->vol))
            return pt_fail(err, PT_E_SAME_VOLUME, "%s volume %s is the overflow volume",
                           names[i], mine[i]->path);
    }
    for (pt_overflow *o = e->overflows; o; o = o->next)
        for (int i = 0; i < 3; i++)
            if (pt_vol_same(&o->vol, mine[i]))
                return pt_fail(err, PT_E_IN_USE, "%s volume %s is an overflow volume",
                               names[i], mine[i]->path);
    for (pt_set *o = e->sets; o; o = o->next) {
        pt_vol *theirs[3] = {&o->m->vol, &o->shadow, &o->bitmap};
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                if (i == 0 && j == 0)
                    continue;   /* several shadows per master */
                if (pt_vol_same(mine[i], theirs[j]))
                    return pt_fail(err, PT_E_IN_USE, "%s volume %s is already the %s of set %s",
                                   names[i], mine[i]->path, names[j], o->name);
            }
    }
    if (m->nsets >= PT_MAX_SIBLINGS)
        return pt_fail(err, PT_E_IN_USE, "master %s already has %d shadows", m->vol.path,
                       PT_MAX_SIBLINGS);
    return 0;
}
