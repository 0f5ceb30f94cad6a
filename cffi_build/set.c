/* Sets: enable, open, close, disable, status, parameters, locks, overflow attachment, reset. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define OFFLINE_MASK (PT_F_MASTER_OFFLINE | PT_F_SHADOW_OFFLINE | PT_F_BITMAP_OFFLINE | \
                      PT_F_OVERFLOW_OFFLINE)

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
    s->pflags = (s->pflags & ~PT_PF_COPYING) | PT_PF_INCOMPLETE;
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    int rc = pt_meta_flush(s);
    return rc ? pt_fail(err, -rc, "bitmap volume %s of set %s: %s", s->bitmap.path, s->name,
                        strerror(-rc))
              : 0;
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

uint64_t pt_chunk_len(const pt_set *s, uint64_t c)
{
    uint64_t start = c << s->cshift;
    uint64_t end = start + s->chunk;
    return (end > s->master_size ? s->master_size : end) - start;
}

/* Marks a volume offline and carries the consequences to the others, as Instant Image did. */
void pt_set_offline(pt_set *s, unsigned flag)
{
    unsigned add = flag;
    if (flag & (PT_F_BITMAP_OFFLINE | PT_F_OVERFLOW_OFFLINE))
        add |= PT_F_SHADOW_OFFLINE;   /* the point in time can no longer be trusted */
    if ((flag & PT_F_MASTER_OFFLINE) && s->kind == PT_DEPENDENT)
        add |= PT_F_SHADOW_OFFLINE;   /* a dependent shadow reads through the master */
    if ((add & (PT_F_SHADOW_OFFLINE | PT_F_BITMAP_OFFLINE)) && s->copying &&
        s->dir == PT_TO_MASTER)
        add |= PT_F_MASTER_OFFLINE;   /* the master is half restored */
    atomic_fetch_or(&s->rflags, add);
    if (add & PT_F_MASTER_OFFLINE)
        atomic_store(&s->m->vol.offline, 1);
    if (add & PT_F_SHADOW_OFFLINE)
        atomic_store(&s->shadow.offline, 1);
    if (add & PT_F_BITMAP_OFFLINE)
        atomic_store(&s->bitmap.offline, 1);
}

/* ---- compact slots ---- */

int pt_slot_alloc(pt_set *s, uint64_t c, bool *spilled)
{
    *spilled = false;
    if (s->slots_used < s->shadow_slots) {
        for (uint64_t k = 0; k < s->shadow_slots; k++) {
            uint64_t i = (s->slot_hint + k) % s->shadow_slots;
            if (!(s->slots[i / 64] & (1ull << (i % 64)))) {
                s->slots[i / 64] |= 1ull << (i % 64);
                s->slots_used++;
                s->slot_hint = i + 1;
                pt_idx_put(s, c, (uint32_t)(i + 1));
                return 0;
            }
        }
    }
    /* slots_used counts slots held until durable release; search the overflow next */
    if (s->ov && !(atomic_load(&s->rflags) & PT_F_OVERFLOW_OFFLINE)) {
        uint64_t slot;
        int rc = pt_ov_alloc(s->ov, &slot);
        if (rc == 0) {
            pt_idx_put(s, c, PT_IDX_OV | (uint32_t)slot);
            s->ov_used++;
            *spilled = true;
            if (!(s->pflags & PT_PF_SPILLED)) {
                s->pflags |= PT_PF_SPILLED;
                s->hdr_dirty = true;
            }
            return 0;
        }
        if (rc == -EIO)
            pt_set_offline(s, PT_F_OVERFLOW_OFFLINE);
    }
    return -ENOSPC;
}

void pt_slot_free(pt_set *s, uint64_t c)
{
    uint32_t v = pt_idx_get(s, c);
    if (v == PT_IDX_NONE)
        return;
    pt_idx_put(s, c, PT_IDX_NONE);
    if (v & PT_IDX_OV)
        s->ov_used--;
    else
        s->slots_used--;
    if (s->bitmap_mem) {
        pt_meta_release(s, &v, 1);
        return;
    }
    if (s->nrel == s->relcap) {
        uint64_t cap = s->relcap ? s->relcap * 2 : 256;
        uint32_t *n = realloc(s->rel, cap * sizeof *n);
        if (!n)
            return;   /* leak the slot rather than risk reusing it early */
        s->rel = n;
        s->relcap = cap;
    }
    s->rel[s->nrel++] = v;
}

int pt_phys(pt_set *s, uint64_t c, pt_vol **vol, uint64_t *off)
{
    if (!s->compact) {
        *vol = &s->shadow;
        *off = c << s->cshift;
        return 0;
    }
    uint32_t v = pt_idx_get(s, c);
    if (v == PT_IDX_NONE)
        return -ENOENT;
    /* open checks every entry against the volumes; this guards against anything that slipped
     * past (I/O outside a volume's data area would corrupt its header or another set's data) */
    if (v & PT_IDX_OV) {
        if (!s->ov || (uint64_t)(v & ~PT_IDX_OV) >= s->ov->nchunks)
            return -EIO;
        *vol = &s->ov->vol;
        *off = s->ov->data_off + (uint64_t)(v & ~PT_IDX_OV) * s->chunk;
    } else {
        if ((uint64_t)(v - 1) >= s->shadow_slots)
            return -EIO;
        *vol = &s->shadow;
        *off = (uint64_t)(v - 1) * s->chunk;
    }
    return 0;
}

/* ---- creation and teardown ---- */

static int vol_key(const pt_volspec *spec, bool *blk, dev_t *dev, ino_t *ino)
{
    struct stat st;
    int rc = spec->fd >= 0 ? fstat(spec->fd, &st) : stat(spec->path, &st);
    if (rc != 0)
        return -errno;
    *blk = S_ISBLK(st.st_mode);
    *dev = *blk ? st.st_rdev : st.st_dev;
    *ino = *blk ? 0 : st.st_ino;
    return 0;
}

static pt_set *set_alloc(pt_engine *eng)
{
    pt_set *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->eng = eng;
    s->shadow.fd = s->bitmap.fd = -1;
    pthread_condattr_t ca;
    bool ok = pthread_mutex_init(&s->meta_mu, NULL) == 0;
    ok = ok && pthread_mutex_init(&s->ctl_mu, NULL) == 0;
    ok = ok && pthread_condattr_init(&ca) == 0;
    ok = ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0;
    ok = ok && pthread_cond_init(&s->ctl_cv, &ca) == 0;
    ok = ok && pt_gc_init(&s->meta_gc) == 0;
    ok = ok && pthread_mutex_init(&s->fb_mu, NULL) == 0;
    if (!ok) {
        free(s);   /* resources of a half-initialised mutex set are not reclaimable anyway */
        return NULL;
    }
    atomic_store(&s->units, PT_DEFAULT_UNITS);
    s->hdr_state = PT_STATE_DIRTY;
    s->fb_fd = -1;
    return s;
}

static void set_free(pt_set *s)
{
    pt_meta_free(s);
    free(s->rel);
    if (s->has_src)
        pt_vol_close(&s->src);
    pt_vol_close(&s->shadow);
    pt_vol_close(&s->bitmap);
    if (s->fb_fd >= 0)
        close(s->fb_fd);
    pthread_mutex_destroy(&s->fb_mu);
    pt_gc_destroy(&s->meta_gc);
    pthread_cond_destroy(&s->ctl_cv);
    pthread_mutex_destroy(&s->ctl_mu);
    pthread_mutex_destroy(&s->meta_mu);
    free(s);
}

static pt_master *master_find(pt_engine *e, bool blk, dev_t dev, ino_t ino)
{
    for (pt_master *m = e->masters; m; m = m->next)
        if (m->vol.is_blk == blk && m->vol.dev == dev && m->vol.ino == ino)
            return m;
    return NULL;
}

static int master_new(pt_engine *e, const pt_volspec *spec, pt_master **out, pt_error *err)
{
    pt_master *m = calloc(1, sizeof *m);
    if (!m)
        return pt_fail(err, ENOMEM, "out of memory");
    int rc = pt_vol_open(&m->vol, spec, "master", err);
    if (rc) {
        free(m);
        return rc;
    }
    pthread_rwlockattr_t a;
    bool ok = pthread_rwlockattr_init(&a) == 0 &&
              pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP) == 0 &&
              pthread_rwlock_init(&m->gate, &a) == 0;
    for (unsigned i = 0; ok && i < PT_STRIPES; i++)
        ok = pthread_rwlock_init(&m->stripes[i], NULL) == 0;
    if (!ok) {
        pt_vol_close(&m->vol);
        free(m);
        return pt_fail(err, EAGAIN, "out of lock resources");
    }
    m->next = e->masters;
    e->masters = m;
    *out = m;
    return 0;
}

static void master_put(pt_engine *e, pt_master *m)
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

/* Refuses volumes that are the same as each other or already serve another set or overflow.
 * Caller holds eng->mu. */
static int check_volumes(pt_engine *e, pt_set *s, pt_master *m, pt_overflow *ov, pt_error *err)
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

static unsigned log2u(uint32_t v)
{
    unsigned n = 0;
    while ((1u << n) < v)
        n++;
    return n;
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

typedef struct open_args {
    const pt_volspec *master, *shadow, *bitmap;
    const pt_set_config *cfg;   /* NULL: open an existing set */
    pt_overflow *ov;
} open_args;

static int set_setup(pt_engine *eng, const open_args *a, pt_set **out, pt_error *err)
{
    pt_set *s = set_alloc(eng);
    if (!s)
        return pt_fail(err, ENOMEM, "out of memory");
    bool creating = a->cfg != NULL;
    s->bitmap_mem = creating && a->cfg->bitmap_in_memory;
    pt_master *m = NULL;
    bool blk = false;
    dev_t dev = 0;
    ino_t ino = 0;
    /* the set's reference keeps a close or delete of the overflow from freeing it under us */
    int rc = a->ov ? pt_ov_hold(a->ov, err) : 0;
    if (rc) {
        set_free(s);
        return rc;
    }

    pthread_mutex_lock(&eng->mu);
    if (!a->master || !a->master->path || !a->master->path[0])
        rc = pt_fail(err, PT_E_INVALID, "no master volume given");
    else if (vol_key(a->master, &blk, &dev, &ino) != 0)
        rc = pt_fail(err, errno == ENOENT ? PT_E_NOT_FOUND : errno, "master volume %s: %s",
                     a->master->path, strerror(errno));
    if (!rc)
        rc = pt_vol_open(&s->shadow, a->shadow, "shadow", err);
    if (!rc && !s->bitmap_mem)
        rc = pt_vol_open(&s->bitmap, a->bitmap, "bitmap", err);
    if (!rc) {
        snprintf(s->name, sizeof s->name, "%s", s->shadow.path);
        m = master_find(eng, blk, dev, ino);
        if (!m)
            rc = master_new(eng, a->master, &m, err);
    }
    if (!rc)
        rc = check_volumes(eng, s, m, a->ov, err);
    if (!rc) {
        s->m = m;
        s->shadow_size = s->shadow.size;
        if (creating) {
            const pt_set_config *c = a->cfg;
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
                rc = pt_fail(err, PT_E_TOO_SMALL, "master volume %s is empty", m->vol.path);
            else if (a->ov && !compact)
                rc = pt_fail(err, PT_E_WRONG_KIND,
                             "set %s is not a compact dependent set (shadow smaller than "
                             "master); only those use an overflow volume such as %s",
                             s->name, a->ov->vol.path);
            else if (a->ov && a->ov->chunk != s->chunk)
                rc = pt_fail(err, PT_E_INVALID,
                             "overflow volume %s has %u-byte chunks; the set uses %u",
                             a->ov->vol.path, a->ov->chunk, s->chunk);
            else if (s->kind == PT_INDEPENDENT && s->shadow_size < s->master_size)
                rc = pt_fail(err, PT_E_TOO_SMALL,
                             "shadow volume %s is %llu bytes; an independent shadow needs at "
                             "least the master's %llu (a dependent set may be smaller)",
                             s->shadow.path, (unsigned long long)s->shadow_size,
                             (unsigned long long)s->master_size);
            if (!rc && m->nsets && s->chunk != m->chunk)
                rc = pt_fail(err, PT_E_INVALID,
                             "master %s is already shadowed with %u-byte chunks; other sets on "
                             "it must use the same chunk size, not %u",
                             m->vol.path, m->chunk, s->chunk);
            if (!rc)
                rc = pt_meta_create(s, err);
            if (!rc && a->ov) {
                rc = pt_ov_add_set(a->ov, s->uuid, err);
                if (!rc) {
                    memcpy(s->ov_uuid, a->ov->uuid, 16);
                    rc = pt_meta_write_header(s, PT_STATE_DIRTY, err);
                    if (rc)
                        pt_ov_remove_set(a->ov, s->uuid, NULL);
                }
            }
        } else {
            rc = pt_meta_load(s, m->vol.size, s->shadow_size, err);
            if (!rc && m->nsets && s->chunk != m->chunk)
                rc = pt_fail(err, PT_E_INVALID,
                             "master %s is shadowed with %u-byte chunks; this set uses %u",
                             m->vol.path, m->chunk, s->chunk);
            if (!rc && !pt_uuid_is_zero(s->ov_uuid)) {
                if (a->ov && memcmp(a->ov->uuid, s->ov_uuid, 16) != 0)
                    rc = pt_fail(err, PT_E_INVALID,
                                 "set %s uses another overflow volume than %s", s->name,
                                 a->ov->vol.path);
                else if (a->ov && a->ov->chunk != s->chunk)
                    rc = pt_fail(err, PT_E_BAD_HEADER,
                                 "overflow volume %s has %u-byte chunks; set %s uses %u "
                                 "(corrupted header)", a->ov->vol.path, a->ov->chunk, s->name,
                                 s->chunk);
                else if (a->ov)
                    rc = check_ov_index(s, a->ov, err);
                else if (s->ov_used)
                    pt_set_offline(s, PT_F_OVERFLOW_OFFLINE);
            } else if (!rc && a->ov) {
                rc = pt_fail(err, PT_E_INVALID, "set %s has no overflow volume attached; "
                             "attach %s after opening it", s->name, a->ov->vol.path);
            }
            if (!rc) {
                s->generation++;
                rc = pt_meta_write_header(s, PT_STATE_DIRTY, err);
            }
        }
    }
    if (!rc) {
        s->cshift = log2u(s->chunk);
        if (a->ov && !pt_uuid_is_zero(s->ov_uuid)) {
            s->ov = a->ov;
            pt_ov_set_opened(a->ov, s);
        } else if (a->ov) {
            pt_ov_set_closed(a->ov);   /* not attached after all: drop the reference */
        }
        pthread_rwlock_wrlock(&m->gate);
        m->chunk = s->chunk;
        m->sets[m->nsets++] = s;
        pthread_rwlock_unlock(&m->gate);
        s->next = eng->sets;
        eng->sets = s;
    } else {
        if (m)
            master_put(eng, m);
        set_free(s);
        s = NULL;
    }
    pthread_mutex_unlock(&eng->mu);
    if (rc) {
        if (a->ov)
            pt_ov_set_closed(a->ov);
        return rc;
    }
    *out = s;
    return 0;
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
    open_args a = {master, shadow, bitmap, cfg, ov};
    pt_set *s;
    int rc = set_setup(eng, &a, &s, err);
    if (rc)
        return rc;
    if (s->kind == PT_INDEPENDENT) {
        rc = atomic_load(&eng->defer_copies) ? defer_copy(s, true, err)
                                             : pt_set_copy(s, PT_TO_SHADOW, 1, 0, err);
        if (rc) {
            pt_set_disable(s, NULL);
            return rc;
        }
    }
    *out = s;
    return 0;
}

int pt_set_open(pt_engine *eng, const pt_volspec *master, const pt_volspec *shadow,
                const pt_volspec *bitmap, pt_overflow *ov, pt_set **out, pt_error *err)
{
    open_args a = {master, shadow, bitmap, NULL, ov};
    pt_set *s;
    int rc = set_setup(eng, &a, &s, err);
    if (rc)
        return rc;
    if ((s->pflags & PT_PF_COPYING) && atomic_load(&eng->defer_copies)) {
        rc = defer_copy(s, false, err);
    } else if (s->pflags & PT_PF_COPYING) {
        pthread_mutex_lock(&s->ctl_mu);
        rc = pt_copy_start_locked(s, err);
        pthread_mutex_unlock(&s->ctl_mu);
        if (rc) {
            pt_set_close(s, NULL);
            return rc;
        }
    }
    *out = s;
    return 0;
}

/* Unregisters and frees. state: header state to leave behind (0 = leave the header alone). */
static int set_teardown(pt_set *s, uint32_t state, pt_error *err)
{
    pt_engine *eng = s->eng;
    pt_master *m = s->m;
    pt_copy_stop(s);
    int rc = 0;
    if (state != PT_STATE_DISABLED) {
        /* volumes already known to be offline are not flushed again: the header records it */
        unsigned off = atomic_load(&s->rflags);
        int r;
        if (!(off & PT_F_MASTER_OFFLINE) && (r = pt_vol_sync(&m->vol)) != 0)
            rc = pt_fail(err, -r, "master volume %s: flush failed: %s", m->vol.path, strerror(-r));
        if (!(off & PT_F_SHADOW_OFFLINE) && (r = pt_vol_sync(&s->shadow)) != 0)
            rc = pt_fail(err, -r, "shadow volume %s: flush failed: %s", s->shadow.path,
                         strerror(-r));
        if (s->ov && !(off & PT_F_OVERFLOW_OFFLINE) && (r = pt_ov_flush(s->ov)) != 0)
            rc = pt_fail(err, -r, "overflow volume %s: flush failed: %s", s->ov->vol.path,
                         strerror(-r));
        if (!(off & PT_F_BITMAP_OFFLINE) && (r = pt_meta_flush(s)) != 0)
            rc = pt_fail(err, -r, "bitmap volume %s: flush failed: %s", s->bitmap.path,
                         strerror(-r));
        /* A bitmap that went offline missed the bits of writes made since: when it takes
         * writes again, all of the bits in memory go to it, so the resync the header asks for
         * below misses no chunk. Still failing, it records nothing; the caller sees why. */
        if ((off & PT_F_BITMAP_OFFLINE) && (r = pt_meta_rewrite(s)) != 0)
            rc = pt_fail(err, -r, "bitmap volume %s: still fails, its bits miss writes made while "
                         "it was offline: %s", s->bitmap.path, strerror(-r));
        if (atomic_load(&s->rflags) & OFFLINE_MASK) {
            /* Remember it where the next open looks: the bits may have missed writes made
             * while a volume was offline, so the shadow must not be served until a reset. */
            pthread_mutex_lock(&s->meta_mu);
            s->pflags |= PT_PF_NEED_RESYNC;
            pthread_mutex_unlock(&s->meta_mu);
        }
        if (!rc || (s->pflags & PT_PF_NEED_RESYNC)) {
            int r2 = pt_meta_write_header(s, state, rc ? NULL : err);
            if (!rc)
                rc = r2;
        }
    }
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
    master_put(eng, m);
    pthread_mutex_unlock(&eng->mu);
    if (s->ov)
        pt_ov_set_closed(s->ov);
    set_free(s);
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
    if (!busy)
        atomic_store(&s->retired, 1);   /* no copy may start from here on (checked under ctl_mu) */
    pthread_mutex_unlock(&s->ctl_mu);
    if (again)
        return 0;
    if (busy)
        return pt_fail(err, PT_E_COPY_IN_PROGRESS,
                       "set %s is copying; wait for the copy or abort it before disabling",
                       s->name);
    /* The header goes first: after this the set can never be reopened with these chunks. Any
     * later header write (a flush from a write still in flight) records DISABLED too. */
    int rc = pt_meta_write_header(s, PT_STATE_DISABLED, err);
    if (rc) {
        atomic_store(&s->retired, 0);
        return rc;
    }
    if (s->ov) {
        pthread_mutex_lock(&s->meta_mu);
        for (uint64_t c = 0; c < s->nchunks; c++) {
            uint32_t v = pt_idx_get(s, c);
            if (v & PT_IDX_OV)
                pt_ov_release(s->ov, v & ~PT_IDX_OV);
        }
        pthread_mutex_unlock(&s->meta_mu);
        /* The set is gone either way; should the overflow keep a stale entry, it only
         * blocks that overflow's deletion until the entry is removed by hand. */
        if (pt_ov_flush(s->ov) == 0)
            pt_ov_remove_set(s->ov, s->uuid, NULL);
    }
    return 0;
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
}

/* ---- observation and parameters ---- */

int pt_set_status(pt_set *s, pt_status *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&s->meta_mu);
    o->kind = s->kind;
    o->chunk_size = s->chunk;
    o->master_size = s->master_size;
    o->shadow_size = s->shadow_size;
    o->chunks = s->nchunks;
    o->diff_chunks = s->D.count;
    o->copy_chunks = s->C.count;
    o->shadow_slots = s->shadow_slots;
    o->shadow_slots_used = s->compact ? s->slots_used : s->D.count;
    o->overflow_used = s->ov_used;
    o->lost_chunks = s->lost;
    o->generation = s->generation;
    o->last_modified_ns = s->last_modified;
    o->bitmap_size = s->bitmap_mem ? 0 : s->total_size;
    memcpy(o->uuid, s->uuid, 16);
    memcpy(o->overflow_uuid, s->ov_uuid, 16);
    uint32_t pf = s->pflags;
    pthread_mutex_unlock(&s->meta_mu);
    /* not under ctl_mu: a reset or copy start holds it across I/O (see internal.h) */
    o->lock_owner = PT_LOAD(s->lock_owner);
    uint32_t f = atomic_load(&s->rflags);
    if (PT_LOAD(s->copying)) {
        f |= PT_F_COPYING;
        if (PT_LOAD(s->dir) == PT_TO_MASTER)
            f |= PT_F_TO_MASTER;
        if (atomic_load(&s->abort_req))
            f |= PT_F_ABORT_REQUESTED;
    }
    if (s->compact)
        f |= PT_F_COMPACT;
    if (pf & PT_PF_OUT_OF_SPACE)
        f |= PT_F_OUT_OF_SPACE;
    if (pf & PT_PF_SPILLED)
        f |= PT_F_SPILLED;
    if (pf & PT_PF_INCOMPLETE)   /* and which side the unfinished copy was writing */
        f |= PT_F_INCOMPLETE | ((pf & PT_PF_TO_MASTER) ? PT_F_TO_MASTER : 0);
    if (!(pf & PT_PF_NEED_RESYNC))   /* a reset ended what the lost bitmap asked for */
        f &= ~PT_F_BITMAP_LOST;
    o->flags = f;
    o->copy_delay_ms = atomic_load(&s->delay_ms);
    o->copy_units = atomic_load(&s->units);
    return 0;
}

int pt_set_get_bits(pt_set *s, int which, uint8_t *out, size_t len, pt_error *err)
{
    if (which != PT_BITS_SHADOW && which != PT_BITS_COPY)
        return pt_fail(err, PT_E_INVALID, "no bitmap %d: use shadow (0) or copy (1)", which);
    size_t need = (size_t)((s->nchunks + 7) / 8);
    if (len < need)
        return pt_fail(err, PT_E_INVALID, "buffer of %zu bytes is too small for %zu", len, need);
    pthread_mutex_lock(&s->meta_mu);
    memcpy(out, which == PT_BITS_SHADOW ? (void *)s->D.w : (void *)s->C.w, need);
    pthread_mutex_unlock(&s->meta_mu);
    return 0;
}

int pt_set_set_params(pt_set *s, uint32_t delay_ms, uint32_t units, pt_error *err)
{
    if (units == 0 || units > PT_UNITS_MAX)
        return pt_fail(err, PT_E_INVALID, "copy units must be between 1 and %u chunks",
                       PT_UNITS_MAX);
    if (delay_ms > PT_DELAY_MAX)
        return pt_fail(err, PT_E_INVALID, "copy delay must be at most %u ms", PT_DELAY_MAX);
    atomic_store(&s->delay_ms, delay_ms);
    atomic_store(&s->units, units);
    pthread_mutex_lock(&s->meta_mu);
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    int rc = pt_meta_flush(s);
    if (rc)
        return pt_fail(err, -rc, "bitmap volume %s: cannot record the parameters: %s",
                       s->bitmap.path, strerror(-rc));
    return 0;
}

int pt_set_lock(pt_set *s, int64_t owner, pt_error *err)
{
    if (owner == 0)
        return pt_fail(err, PT_E_INVALID, "a lock needs an owner");
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (s->lock_owner && s->lock_owner != owner)
        rc = pt_fail(err, PT_E_IN_USE, "set %s is locked by %lld", s->name,
                     (long long)s->lock_owner);
    else
        PT_STORE(s->lock_owner, owner);
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_unlock(pt_set *s, int64_t owner, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (!s->lock_owner)
        rc = pt_fail(err, PT_E_NOT_LOCKED, "set %s is not locked", s->name);
    else if (owner && s->lock_owner != owner)
        rc = pt_fail(err, PT_E_IN_USE, "set %s is locked by %lld, not %lld", s->name,
                     (long long)s->lock_owner, (long long)owner);
    else
        PT_STORE(s->lock_owner, (int64_t)0);
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_inject_error(pt_set *s, int volume, int on, int errnum, pt_error *err)
{
    if (errnum < 0 || errnum > 4095)
        return pt_fail(err, PT_E_INVALID, "%d is not an errno to inject", errnum);
    pt_vol *v = volume == PT_VOL_MASTER ? &s->m->vol
              : volume == PT_VOL_SHADOW ? &s->shadow
              : volume == PT_VOL_BITMAP ? &s->bitmap
              : volume == PT_VOL_OVERFLOW && s->ov ? &s->ov->vol : NULL;
    if (!v)
        return pt_fail(err, PT_E_INVALID, "set %s has no volume %d", s->name, volume);
    atomic_store(&v->inject, on ? (errnum ? errnum : EIO) : 0);
    return 0;
}

/* ---- overflow attachment ---- */

int pt_set_attach_overflow(pt_set *s, pt_overflow *ov, pt_error *err)
{
    if (!s->compact)
        return pt_fail(err, PT_E_WRONG_KIND,
                       "set %s is not a compact dependent set; only those use overflow volumes",
                       s->name);
    if (ov->chunk != s->chunk)
        return pt_fail(err, PT_E_INVALID, "overflow volume %s has %u-byte chunks; set %s uses %u",
                       ov->vol.path, ov->chunk, s->name, s->chunk);
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (atomic_load(&s->retired))
        rc = pt_fail(err, PT_E_CLOSED, "set %s is being disabled", s->name);
    else if (s->ov == ov)
        rc = 0;   /* already attached: nothing to do */
    else if (s->ov || !pt_uuid_is_zero(s->ov_uuid))
        rc = pt_fail(err, PT_E_IN_USE, "set %s already has an overflow volume", s->name);
    else if ((rc = pt_ov_hold(ov, err)) != 0) {
        /* the overflow volume is being closed or deleted */
    } else if ((rc = pt_ov_add_set(ov, s->uuid, err)) != 0) {
        pt_ov_set_closed(ov);
    } else {
        pthread_rwlock_wrlock(&s->m->gate);
        pthread_mutex_lock(&s->meta_mu);
        memcpy(s->ov_uuid, ov->uuid, 16);
        pthread_mutex_unlock(&s->meta_mu);
        rc = pt_meta_write_header(s, PT_STATE_DIRTY, err);
        if (rc) {
            pthread_mutex_lock(&s->meta_mu);
            memset(s->ov_uuid, 0, 16);
            pthread_mutex_unlock(&s->meta_mu);
            pt_ov_remove_set(ov, s->uuid, NULL);
            pt_ov_set_closed(ov);
        } else {
            s->ov = ov;
            pt_ov_set_opened(ov, s);
        }
        pthread_rwlock_unlock(&s->m->gate);
    }
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

int pt_set_detach_overflow(pt_set *s, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    pthread_rwlock_wrlock(&s->m->gate);
    int rc = 0;
    pt_overflow *ov = s->ov;
    pthread_mutex_lock(&s->meta_mu);
    uint64_t used = s->ov_used;
    uint8_t saved[16];
    memcpy(saved, s->ov_uuid, 16);
    if (!ov)
        rc = pt_fail(err, PT_E_NOT_FOUND, "set %s has no overflow volume attached", s->name);
    else if (used)
        rc = pt_fail(err, PT_E_DEPENDENCY,
                     "%llu chunk(s) of set %s live on overflow volume %s; update the shadow "
                     "or disable the set first",
                     (unsigned long long)used, s->name, ov->vol.path);
    else
        memset(s->ov_uuid, 0, 16);
    pthread_mutex_unlock(&s->meta_mu);
    if (!rc) {
        rc = pt_meta_write_header(s, PT_STATE_DIRTY, err);
        if (rc) {
            pthread_mutex_lock(&s->meta_mu);
            memcpy(s->ov_uuid, saved, 16);
            pthread_mutex_unlock(&s->meta_mu);
        }
    }
    if (!rc) {
        /* slots still waiting for a durable release go back before the handle is dropped */
        pt_meta_flush(s);
        s->ov = NULL;
        pt_ov_set_closed(ov);
        pt_ov_remove_set(ov, s->uuid, err);
    }
    pthread_rwlock_unlock(&s->m->gate);
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

/* ---- join: merge the shadow bitmap another host kept for this set's exported shadow ---- */

int pt_set_join(pt_set *s, const pt_volspec *bitmap, pt_error *err)
{
    pt_set *o = calloc(1, sizeof *o);
    if (!o)
        return pt_fail(err, ENOMEM, "out of memory");
    o->shadow.fd = -1;
    int rc = pt_vol_open(&o->bitmap, bitmap, "joined bitmap", err);
    if (!rc)
        rc = pt_meta_load(o, s->master_size, s->shadow_size, err);
    if (!rc && (o->chunk != s->chunk || o->nchunks != s->nchunks))
        rc = pt_fail(err, PT_E_SIZE_MISMATCH, "bitmap %s maps %llu chunks of %u bytes; set %s "
                     "has %llu of %u", o->bitmap.path, (unsigned long long)o->nchunks, o->chunk,
                     s->name, (unsigned long long)s->nchunks, s->chunk);
    if (!rc) {
        pthread_rwlock_wrlock(&s->m->gate);
        pthread_mutex_lock(&s->meta_mu);
        pt_bits_or(&s->D, &o->D, pt_image_mark, &s->img);
        pthread_mutex_unlock(&s->meta_mu);
        pthread_rwlock_unlock(&s->m->gate);
        int r = pt_meta_flush(s);
        if (r)
            rc = pt_fail(err, -r, "bitmap volume %s: cannot record the joined bits: %s",
                         s->bitmap.path, strerror(-r));
    }
    pt_meta_free(o);
    pt_vol_close(&o->bitmap);
    free(o);
    return rc;
}

/* ---- the fallback record (format: docs/bitmap-format.md) ---- */

#define FB_SIZE 64
#define FB_VERSION 1u
#define FB_CLEAR 1u
#define FB_LOST 2u
#define FB_CRC (FB_SIZE - 4)
static const char FB_MAGIC[8] = {'P', 'T', 'C', 'O', 'P', 'Y', 'F', 'B'};

/* One 64-byte record at offset 0, rewritten in place: a write that small never straddles a
 * sector, and the checksum catches anything else. Caller holds fb_mu. */
static int fb_write(pt_set *s, uint32_t state)
{
    uint8_t r[FB_SIZE];
    memset(r, 0, sizeof r);
    memcpy(r, FB_MAGIC, 8);
    uint32_t v = FB_VERSION;
    memcpy(r + 8, &v, 4);
    memcpy(r + 12, &state, 4);
    memcpy(r + 16, s->uuid, 16);
    uint64_t now = pt_wall_ns();
    memcpy(r + 32, &now, 8);
    uint32_t crc = pt_crc32c(r, FB_CRC);
    memcpy(r + FB_CRC, &crc, 4);
    ssize_t n = pwrite(s->fb_fd, r, sizeof r, 0);
    if (n != (ssize_t)sizeof r)
        return n < 0 ? -errno : -EIO;
    return fdatasync(s->fb_fd) ? -errno : 0;
}

int pt_fb_lost(pt_set *s)
{
    if (s->bitmap_mem || atomic_load(&s->fb_lost))
        return 0;
    pthread_mutex_lock(&s->fb_mu);
    int rc = 0;
    if (!atomic_load(&s->fb_lost)) {
        rc = s->fb_fd < 0 ? -ENODEV : fb_write(s, FB_LOST);
        if (!rc)
            atomic_store(&s->fb_lost, 1);
    }
    /* A later success covers earlier failures too: the next open copies every chunk. */
    if (rc)
        atomic_fetch_or(&s->rflags, PT_F_UNRECORDED);
    else
        atomic_fetch_and(&s->rflags, ~PT_F_UNRECORDED);
    pthread_mutex_unlock(&s->fb_mu);
    return rc;
}

void pt_fb_clear(pt_set *s)
{
    pthread_mutex_lock(&s->fb_mu);
    atomic_fetch_and(&s->rflags, ~PT_F_UNRECORDED);
    /* a failed clear leaves "lost": one needless full copy at the next open, nothing missed */
    if (atomic_load(&s->fb_lost) && s->fb_fd >= 0 && fb_write(s, FB_CLEAR) == 0)
        atomic_store(&s->fb_lost, 0);
    pthread_mutex_unlock(&s->fb_mu);
}

/* NULL when the record says this set's bitmap can be trusted; else why not. Anything that is
 * not a valid "clear" record of this set counts as lost: a full copy is the only safe answer. */
static const char *fb_judge(const pt_set *s, const uint8_t *r, size_t n)
{
    bool zero = true;
    for (size_t i = 0; i < n && zero; i++)
        zero = r[i] == 0;
    if (zero)
        return NULL;   /* a new record: nothing was ever lost */
    uint32_t v, state, crc;
    if (n < FB_SIZE)
        return "is truncated";
    memcpy(&v, r + 8, 4);
    memcpy(&state, r + 12, 4);
    memcpy(&crc, r + FB_CRC, 4);
    if (memcmp(r, FB_MAGIC, 8) != 0)
        return "is not a ptcopy fallback record";
    if (v != FB_VERSION)
        return "has an unsupported version";
    if (crc != pt_crc32c(r, FB_CRC))
        return "is corrupted (checksum mismatch)";
    if (memcmp(r + 16, s->uuid, 16) != 0)
        return "belongs to another set";
    if (state == FB_CLEAR)
        return NULL;
    if (state == FB_LOST)
        return "says its bitmap volume went offline and missed changed chunks";
    return "has an unknown state";
}

int pt_set_fallback(pt_set *s, int fd, int *recovered, pt_error *err)
{
    if (recovered)
        *recovered = 0;
    if (s->bitmap_mem)
        return pt_fail(err, PT_E_WRONG_KIND, "set %s keeps its bitmaps in memory: nothing of it "
                       "survives a stop, so it has no fallback record", s->name);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return pt_fail(err, PT_E_INVALID, "set %s: descriptor %d of its fallback record is not "
                       "open", s->name, fd);
    if (!S_ISREG(st.st_mode))
        return pt_fail(err, PT_E_INVALID, "set %s: its fallback record must be a regular file",
                       s->name);
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (nfd < 0)
        return pt_fail(err, errno, "set %s: cannot keep its fallback record open: %s", s->name,
                       strerror(errno));
    uint8_t r[FB_SIZE];
    ssize_t n = pread(nfd, r, sizeof r, 0);
    if (n < 0) {
        int e = errno;
        close(nfd);
        return pt_fail(err, e, "set %s: cannot read its fallback record: %s", s->name,
                       strerror(e));
    }
    const char *why = fb_judge(s, r, (size_t)n);
    pthread_mutex_lock(&s->fb_mu);
    int old = s->fb_fd;
    s->fb_fd = nfd;
    atomic_store(&s->fb_lost, why != NULL);
    pthread_mutex_unlock(&s->fb_mu);
    if (old >= 0)
        close(old);
    if (!why)
        return 0;
    /* The set comes back as a close with its bitmap offline leaves it: the bits missed writes,
     * and copy-on-write (dependent) or copy-on-demand skipped chunks while the shadow side was
     * offline, so only a reset (a full copy, or a new point in time) makes the shadow right. */
    pthread_mutex_lock(&s->meta_mu);
    if (s->kind == PT_INDEPENDENT)
        pt_bits_fill(&s->D, pt_image_mark, &s->img);
    s->pflags |= PT_PF_NEED_RESYNC;
    s->generation++;
    pthread_mutex_unlock(&s->meta_mu);
    atomic_fetch_or(&s->rflags, PT_F_BITMAP_LOST);
    if (recovered)
        *recovered = 1;
    /* Whole, whatever the offline flags say; its success clears the record (meta_flush_fn). */
    int rc = pt_meta_rewrite(s);
    /* offline first: a restore the open resumed takes the half-restored master with it */
    pt_set_offline(s, rc ? PT_F_BITMAP_OFFLINE : PT_F_SHADOW_OFFLINE);
    /* A copy the open resumed would only fail on the offline shadow; stopped now (resumable
     * as at a close), it does not make the reset wait for it. */
    pt_copy_stop(s);
    return 0;   /* still failing: the record stays, the flags say bitmap-offline */
}

/* ---- hooks for the kernel data path ---- */

int pt_set_mark(pt_set *s, uint64_t first, uint64_t count, pt_error *err)
{
    if (first > s->nchunks || count > s->nchunks - first)
        return pt_fail(err, PT_E_INVALID, "set %s: chunks %llu+%llu are outside its %llu chunks",
                       s->name, (unsigned long long)first, (unsigned long long)count,
                       (unsigned long long)s->nchunks);
    if (!count)
        return 0;
    pthread_mutex_lock(&s->meta_mu);
    for (uint64_t c = first; c < first + count; c++)
        pt_set_D(s, c);
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    int rc = pt_meta_flush(s);
    if (rc)
        pt_fb_lost(s);   /* the chunks changed already: the record keeps a crash from losing them */
    if (rc)
        return pt_fail(err, -rc, "bitmap volume %s of set %s: cannot record changed chunks: %s",
                       s->bitmap.path, s->name, strerror(-rc));
    return 0;
}

int pt_set_copy_source(pt_set *s, const pt_volspec *src, pt_error *err)
{
    pthread_mutex_lock(&s->ctl_mu);
    int rc = 0;
    if (s->copying || (s->thr_live && !s->thr_done)) {
        rc = pt_fail(err, PT_E_COPY_IN_PROGRESS, "set %s is copying; its source cannot change "
                     "under the copy", s->name);
    } else if (!src) {
        if (s->has_src)
            pt_vol_close(&s->src);
        s->has_src = false;
    } else {
        pt_vol v;
        rc = pt_vol_open(&v, src, "frozen source", err);
        if (!rc && v.size < s->master_size) {
            rc = pt_fail(err, PT_E_TOO_SMALL, "frozen source %s has %llu bytes; set %s needs %llu",
                         v.path, (unsigned long long)v.size, s->name,
                         (unsigned long long)s->master_size);
            pt_vol_close(&v);
        }
        if (!rc) {
            if (s->has_src)
                pt_vol_close(&s->src);
            s->src = v;
            s->has_src = true;
        }
    }
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}
