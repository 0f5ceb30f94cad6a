/* The I/O path: reads with redirection, writes with copy-on-write and copy-on-demand.
 *
 * Every request holds its master's gate shared and the stripes of the chunks it touches
 * (exclusive for writes), so a chunk's bits and its data change together as one step.
 * A write first prepares every chunk (copies old data where the point in time needs it,
 * sets bits), then makes those copies and bits durable with group-committed syncs, and only
 * then writes the caller's data: the ordering rules of ARCHITECTURE.md. A restore's copier
 * writes the master through the same preparation (pt_master_prepare), so every other set of
 * that master keeps its point in time as it does for an application's write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Calls fn on every stripe covering chunks c0..c1, in ascending stripe order (which is what
 * keeps overlapping requests from deadlocking): only the stripes the range covers. */
static void for_stripes(pt_master *m, uint64_t c0, uint64_t c1, bool excl, bool lock)
{
    uint64_t n = c1 - c0 + 1;
    unsigned a = (unsigned)(c0 % PT_STRIPES), b = (unsigned)(c1 % PT_STRIPES);
    unsigned ranges[2][2];
    int nr = 0;
    if (n >= PT_STRIPES) {
        ranges[nr][0] = 0, ranges[nr++][1] = PT_STRIPES - 1;
    } else if (a <= b) {
        ranges[nr][0] = a, ranges[nr++][1] = b;
    } else {   /* wraps: [0, b] then [a, end] */
        ranges[nr][0] = 0, ranges[nr++][1] = b;
        ranges[nr][0] = a, ranges[nr++][1] = PT_STRIPES - 1;
    }
    for (int r = 0; r < nr; r++)
        for (unsigned i = ranges[r][0]; i <= ranges[r][1]; i++) {
            if (!lock)
                pthread_rwlock_unlock(&m->stripes[i]);
            else if (excl)
                pthread_rwlock_wrlock(&m->stripes[i]);
            else
                pthread_rwlock_rdlock(&m->stripes[i]);
        }
}

void pt_lock_range(pt_master *m, uint64_t c0, uint64_t c1, bool excl)
{
    for_stripes(m, c0, c1, excl, true);
}

void pt_unlock_range(pt_master *m, uint64_t c0, uint64_t c1)
{
    for_stripes(m, c0, c1, false, false);
}

/* Copies chunk c between master and the shadow's physical place for it. Caller holds the
 * chunk's stripe exclusive; buf holds a chunk. */
int pt_copy_chunk(pt_set *s, uint64_t c, int dir, void *buf)
{
    uint64_t len = pt_chunk_len(s, c);
    pt_vol *pv;
    uint64_t po;
    int rc = pt_phys(s, c, &pv, &po);
    if (rc)
        return rc;
    pt_vol *mv = &s->m->vol;
    uint64_t mo = c << s->cshift;
    pt_vol *src = dir == PT_TO_SHADOW ? mv : pv, *dst = dir == PT_TO_SHADOW ? pv : mv;
    uint64_t so = dir == PT_TO_SHADOW ? mo : po, dof = dir == PT_TO_SHADOW ? po : mo;
    if (atomic_load(&src->offline) || atomic_load(&dst->offline))
        return -EIO;
    rc = pt_vol_pread(src, buf, len, so);
    if (rc) {
        pt_vol_failed(s, src);
        return rc;
    }
    rc = pt_vol_pwrite(dst, buf, len, dof);
    if (rc)
        pt_vol_failed(s, dst);
    return rc;
}

/* ---- reads ---- */

static int locate(pt_set *s, int side, uint64_t c, pt_vol **v, uint64_t *off)
{
    pt_master *m = s->m;
    if (side == PT_MASTER) {
        for (int i = 0; i < m->nsets; i++) {
            pt_set *x = m->sets[i];
            if (x->copying && x->dir == PT_TO_MASTER && pt_bit_get(&x->C, c))
                return pt_phys(x, c, v, off) == 0 ? 0 : -EIO;
        }
        *v = &m->vol;
        *off = c << s->cshift;
        return 0;
    }
    bool own;
    if (s->kind == PT_INDEPENDENT)
        own = !(s->copying && s->dir == PT_TO_SHADOW && pt_bit_get(&s->C, c));
    else
        own = pt_bit_get(&s->D, c) || pt_bit_get(&s->C, c);
    if (!own) {
        *v = &m->vol;
        *off = c << s->cshift;
        return 0;
    }
    int rc = pt_phys(s, c, v, off);
    return rc == -ENOENT ? -PT_E_OUT_OF_SPACE : rc;
}

static int check_io(pt_set *s, int side, uint64_t off, size_t len, pt_error *err)
{
    if (side != PT_MASTER && side != PT_SHADOW)
        return pt_fail(err, PT_E_INVALID, "side %d is neither master (0) nor shadow (1)", side);
    if (off > s->master_size || len > s->master_size - off)
        return pt_fail(err, PT_E_INVALID,
                       "range %llu+%zu is beyond the end of the %llu-byte %s of set %s",
                       (unsigned long long)off, len, (unsigned long long)s->master_size,
                       side == PT_MASTER ? "master" : "shadow", s->name);
    unsigned f = atomic_load(&s->rflags);
    if (side == PT_MASTER && (f & PT_F_MASTER_OFFLINE))
        return pt_fail(err, PT_E_OFFLINE, "master volume %s of set %s is offline; reset the set",
                       s->m->vol.path, s->name);
    if (side == PT_SHADOW && (f & PT_F_SHADOW_OFFLINE))
        return pt_fail(err, PT_E_OFFLINE, "shadow volume %s of set %s is offline; reset the set",
                       s->shadow.path, s->name);
    return 0;
}

static int io_error(pt_set *s, pt_vol *v, int rc, const char *what, pt_error *err)
{
    if (rc == -PT_E_OUT_OF_SPACE)
        return pt_fail(err, PT_E_OUT_OF_SPACE,
                       "set %s lost this point-in-time chunk when its shadow ran out of space; "
                       "update or reset the set", s->name);
    if (v)
        pt_vol_failed(s, v);
    return pt_fail(err, rc < 0 ? -rc : EIO, "%s %s volume %s of set %s failed: %s", what,
                   v ? v->role : "a", v ? v->path : "?", s->name, strerror(rc < 0 ? -rc : EIO));
}

/* What every read and write checks first: an imported set's side (its one volume is held as
 * the master), an exported shadow (another host's), then the range. */
static int io_entry(pt_set *s, int *side, uint64_t off, size_t len, const char *what,
                    pt_error *err)
{
    int rc = s->kind == PT_IMPORTED ? pt_import_side(s, side, err) : 0;
    if (!rc && *side == PT_SHADOW)
        rc = pt_export_refuse(s, what, err);
    return rc ? rc : check_io(s, *side, off, len, err);
}

int pt_set_read(pt_set *s, int side, uint64_t off, void *buf, size_t len, pt_error *err)
{
    int rc = io_entry(s, &side, off, len, "read", err);
    if (rc || len == 0)
        return rc;
    pt_master *m = s->m;
    uint64_t c0 = off >> s->cshift, c1 = (off + len - 1) >> s->cshift;
    pthread_rwlock_rdlock(&m->gate);
    pt_lock_range(m, c0, c1, false);
    uint8_t *out = buf;
    pt_vol *rv = NULL;
    uint64_t roff = 0, rlen = 0;
    uint8_t *rbuf = out;
    uint64_t pos = off, end = off + len;
    while (pos < end && !rc) {
        uint64_t c = pos >> s->cshift, in = pos - (c << s->cshift);
        uint64_t n = pt_chunk_len(s, c) - in;
        if (n > end - pos)
            n = end - pos;
        pt_vol *v;
        uint64_t po;
        rc = locate(s, side, c, &v, &po);
        if (rc) {
            rc = io_error(s, NULL, rc, "reading", err);
            break;
        }
        po += in;
        if (rv == v && roff + rlen == po) {
            rlen += n;
        } else {
            if (rlen && (rc = pt_vol_pread(rv, rbuf, rlen, roff)) != 0) {
                rc = io_error(s, rv, rc, "reading", err);
                break;
            }
            rv = v;
            roff = po;
            rlen = n;
            rbuf = out + (pos - off);
        }
        pos += n;
    }
    if (!rc && rlen && (rc = pt_vol_pread(rv, rbuf, rlen, roff)) != 0)
        rc = io_error(s, rv, rc, "reading", err);
    pt_unlock_range(m, c0, c1);
    pthread_rwlock_unlock(&m->gate);
    return rc;
}

/* ---- writes ---- */

static void note_data(pt_set *s, uint64_t c, pt_wctx *w)
{
    pt_vol *v;
    uint64_t o;
    if (pt_phys(s, c, &v, &o) == 0) {
        if (v == &s->shadow)
            w->shadow_data = true;
        else
            w->ov_data = true;
    }
}

/* Records that chunk c's shadow bit is to be set (and its copy bit cleared): pt_cow_commit
 * makes the change in memory once the data it vouches for is durable. */
static void mark_D(pt_set *s, uint64_t c, bool clear_c, pt_wctx *w)
{
    (void)s;
    w->bitop[c - w->c0] = clear_c ? PT_BIT_D_NOT_C : PT_BIT_D;
    w->meta = true;
}

/* Allocates chunk c's place on a compact shadow. -ENOSPC when none is left. */
static int alloc_phys(pt_set *s, uint64_t c, pt_wctx *w)
{
    if (!s->compact || pt_idx_get(s, c) != PT_IDX_NONE)
        return 0;
    bool spilled;
    pthread_mutex_lock(&s->meta_mu);
    int rc = pt_slot_alloc(s, c, &spilled);
    pthread_mutex_unlock(&s->meta_mu);
    if (spilled)
        w->ov_meta = true;
    if (!rc)
        w->meta = true;
    return rc;
}

/* Prepares set s (the writer's set or a sibling on the same master) for a write of master
 * chunk c. Fails only when the master itself fails: the shadow never fails a master write. */
static int prep_master(pt_set *s, uint64_t c, pt_wctx *w, void *buf)
{
    unsigned rf = atomic_load(&s->rflags);
    if (s->copying && pt_bit_get(&s->C, c)) {
        if (s->dir == PT_TO_SHADOW) {
            if (!(rf & PT_F_SHADOW_OFFLINE) && pt_copy_chunk(s, c, PT_TO_SHADOW, buf) == 0)
                w->shadow_data = true;
        } else {
            if (pt_copy_chunk(s, c, PT_TO_MASTER, buf) != 0)
                return -EIO;
            w->master_data = true;
        }
        mark_D(s, c, true, w);
    } else if (rf & PT_F_SHADOW_OFFLINE) {
        mark_D(s, c, false, w);   /* nothing left to protect, but remember the difference */
    } else if (s->kind == PT_DEPENDENT) {
        if (pt_bit_get(&s->D, c))
            return 0;
        if (alloc_phys(s, c, w) == -ENOSPC) {
            /* out of space: the master write goes ahead, the point-in-time chunk is lost */
            pthread_mutex_lock(&s->meta_mu);
            if (!(s->pflags & PT_PF_OUT_OF_SPACE)) {
                s->pflags |= PT_PF_OUT_OF_SPACE;
                s->hdr_dirty = true;
            }
            s->lost++;
            pthread_mutex_unlock(&s->meta_mu);
        } else {
            w->cow[w->ncow++] = c;   /* copied by cow_copy, with its neighbours */
        }
        mark_D(s, c, false, w);
    } else if (!pt_bit_get(&s->D, c)) {
        mark_D(s, c, false, w);
    }
    return (atomic_load(&s->rflags) & PT_F_MASTER_OFFLINE) ? -EIO : 0;
}

/* Prepares a write of shadow chunk c. */
static int prep_shadow(pt_set *s, uint64_t c, pt_wctx *w, void *buf)
{
    if (s->copying && pt_bit_get(&s->C, c)) {
        /* the copy must see this chunk's point-in-time data before the shadow changes */
        if (pt_copy_chunk(s, c, s->dir, buf) != 0)
            return -EIO;
        if (s->dir == PT_TO_MASTER)
            w->master_data = true;
        else
            w->shadow_data = true;
        mark_D(s, c, true, w);
        return 0;
    }
    if (pt_bit_get(&s->D, c))   /* a chunk lost to out-of-space has no place to write to */
        return s->compact && pt_idx_get(s, c) == PT_IDX_NONE ? -PT_E_OUT_OF_SPACE : 0;
    if (s->kind == PT_DEPENDENT) {
        int rc = alloc_phys(s, c, w);
        if (rc)
            return -PT_E_OUT_OF_SPACE;
        if (pt_copy_chunk(s, c, PT_TO_SHADOW, buf) != 0) {
            if (s->compact) {   /* the refused write must not keep the place it took */
                pthread_mutex_lock(&s->meta_mu);
                pt_slot_free(s, c);
                pthread_mutex_unlock(&s->meta_mu);
            }
            return -EIO;
        }
        note_data(s, c, w);
    }
    mark_D(s, c, false, w);
    return 0;
}

/* Copies the chunks prepare left in w->cow from the master to their places on the shadow
 * side: a run of neighbouring chunks whose places are contiguous too (a whole request, on a
 * full-size shadow) takes one read and one write instead of one of each per chunk. buf holds
 * cap bytes (NULL: none; then chunk by chunk through cbuf, which holds one chunk). */
static void cow_copy(pt_wctx *w, uint8_t *buf, uint64_t cap, void *cbuf)
{
    pt_set *s = w->s;
    pt_vol *mv = &s->m->vol;
    uint64_t i = 0;
    while (i < w->ncow) {
        uint64_t c = w->cow[i], j = i + 1;
        pt_vol *pv, *v2;
        uint64_t po, o2;
        if (pt_phys(s, c, &pv, &po) != 0) {   /* prepare placed it; nothing else can fail */
            i++;
            continue;
        }
        uint64_t len = pt_chunk_len(s, c);
        while (buf && j < w->ncow && w->cow[j] == w->cow[j - 1] + 1 &&
               len + s->chunk <= cap && pt_phys(s, w->cow[j], &v2, &o2) == 0 && v2 == pv &&
               o2 == po + len) {
            len += pt_chunk_len(s, w->cow[j]);
            j++;
        }
        void *b = buf ? buf : cbuf;
        i = j;
        if (atomic_load(&mv->offline) || atomic_load(&pv->offline))
            continue;
        int rc = pt_vol_pread(mv, b, len, c << s->cshift);
        if (rc) {
            pt_vol_failed(s, mv);
            continue;
        }
        rc = pt_vol_pwrite(pv, b, len, po);
        if (rc) {
            pt_vol_failed(s, pv);
            continue;
        }
        if (pv == &s->shadow)
            w->shadow_data = true;
        else
            w->ov_data = true;
    }
}

/* The caller's data onto the shadow, chunk by chunk at each chunk's place. */
static int write_shadow(pt_set *s, uint64_t off, const void *buf, size_t len, pt_error *err)
{
    const uint8_t *p = buf;
    uint64_t pos = off, end = off + len;
    while (pos < end) {
        uint64_t c = pos >> s->cshift, in = pos - (c << s->cshift);
        uint64_t k = pt_chunk_len(s, c) - in;
        if (k > end - pos)
            k = end - pos;
        pt_vol *v;
        uint64_t po;
        int rc = pt_phys(s, c, &v, &po);
        if (rc)
            return io_error(s, NULL, -PT_E_OUT_OF_SPACE, "writing", err);
        if ((rc = pt_vol_pwrite(v, p + (pos - off), k, po + in)) != 0)
            return io_error(s, v, rc, "writing", err);
        pos += k;
    }
    return 0;
}

/* The work of one write for the sets in ws[0..n): per chunk c0..c1 prepare (copies where the
 * point in time needs them, bit changes recorded), copy-on-write in runs, then the commit that
 * makes the copies and bits durable. A chunk a `mask` set has no copy bit for is left alone
 * (NULL: every chunk). cbuf holds one chunk. */
static int prepare_commit(pt_master *m, pt_wctx *ws, int n, int side, uint64_t c0, uint64_t c1,
                          const pt_set *mask, void *cbuf)
{
    int rc = 0;
    if (n == 0)
        return 0;
    /* Even a write that covers a whole chunk copies first: if the crash tears it, every byte
     * must read old or new, never what the target held before the point in time. */
    for (uint64_t c = c0; c <= c1 && !rc; c++) {
        if (mask && !pt_bit_get(&mask->C, c))
            continue;
        for (int i = 0; i < n && !rc; i++)
            rc = side == PT_MASTER ? prep_master(ws[i].s, c, &ws[i], cbuf)
                                   : prep_shadow(ws[i].s, c, &ws[i], cbuf);
    }
    uint64_t ncow = 0, chunk = ws[0].s->chunk;
    for (int i = 0; i < n; i++)
        ncow = ws[i].ncow > ncow ? ws[i].ncow : ncow;
    if (ncow) {
        /* one read and one write per run of chunks; chunk by chunk when no memory for more */
        uint64_t cap = ncow * chunk < PT_COW_RUN ? ncow * chunk : PT_COW_RUN;
        uint8_t *run = ncow > 1 ? malloc(cap) : NULL;
        for (int i = 0; i < n; i++)
            cow_copy(&ws[i], run, run ? cap : 0, cbuf);
        free(run);
    }
    /* what was prepared is made durable even when a later chunk failed */
    int crc = pt_cow_commit(m, ws, n, side, c1 - c0 + 1);
    return rc ? rc : crc;
}

/* A restore (copy to the master) running on x: its copy-on-demand writes the master. */
static bool restoring(const pt_set *x)
{
    return x->copying && x->dir == PT_TO_MASTER;
}

int pt_master_prepare(pt_master *m, const pt_set *skip, uint64_t c0, uint64_t c1,
                      const pt_set *mask, void *cbuf)
{
    uint64_t nch = c1 - c0 + 1;
    int n = m->nsets;   /* stable while the gate is held */
    /* per set: the chunks to copy, then the recorded bit changes */
    uint8_t *work = calloc((size_t)n, nch * (sizeof(uint64_t) + 1));
    if (!work)
        return -ENOMEM;
    pt_wctx ws[PT_MAX_SIBLINGS];
    int nkeep = 0, nres = 0;
    /* the sets that keep their point in time first, then the ones being restored from */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            pt_set *x = m->sets[i];
            if (x == skip || restoring(x) != (pass == 1))
                continue;
            int k = nkeep + nres;
            memset(&ws[k], 0, sizeof ws[k]);
            ws[k].s = x;
            ws[k].c0 = c0;
            ws[k].cow = (uint64_t *)work + (size_t)k * nch;
            ws[k].bitop = work + (size_t)n * nch * sizeof(uint64_t) + (size_t)k * nch;
            if (pass == 0)
                nkeep++;
            else
                nres++;
        }
    /* Two commits when a restore runs: its copy-on-demand overwrites the master chunk, so the
     * old data must be on every dependent sibling, and every sibling's bit durable, before
     * that write is even issued (the same rule as for the caller's own write). */
    int rc = prepare_commit(m, ws, nkeep, PT_MASTER, c0, c1, mask, cbuf);
    if (!rc)
        rc = prepare_commit(m, ws + nkeep, nres, PT_MASTER, c0, c1, mask, cbuf);
    free(work);
    return rc;
}

int pt_set_write(pt_set *s, int side, uint64_t off, const void *buf, size_t len,
                 pt_error *err)
{
    int rc = io_entry(s, &side, off, len, "written", err);
    if (rc || len == 0)
        return rc;
    pt_master *m = s->m;
    uint64_t c0 = off >> s->cshift, c1 = (off + len - 1) >> s->cshift, nch = c1 - c0 + 1;
    /* a chunk-sized buffer for copy-on-write; on the stack when small, rewrites never touch it */
    uint8_t small[64 * 1024];
    void *cbuf = s->chunk <= sizeof small ? small : malloc(s->chunk);
    if (!cbuf)
        return pt_fail(err, ENOMEM, "out of memory");
    pthread_rwlock_rdlock(&m->gate);
    pt_lock_range(m, c0, c1, true);
    if (side == PT_MASTER) {
        rc = pt_master_prepare(m, NULL, c0, c1, NULL, cbuf);
    } else {
        uint8_t *work = calloc(nch, sizeof(uint64_t) + 1);
        pt_wctx w = {.s = s, .c0 = c0, .cow = (uint64_t *)work,
                     .bitop = work ? work + nch * sizeof(uint64_t) : NULL};
        rc = work ? prepare_commit(m, &w, 1, PT_SHADOW, c0, c1, NULL, cbuf) : -ENOMEM;
        free(work);
    }
    if (rc == -ENOMEM)
        rc = pt_fail(err, ENOMEM, "out of memory");
    else if (rc == -PT_E_OUT_OF_SPACE)
        rc = pt_fail(err, PT_E_OUT_OF_SPACE,
                     "shadow of set %s has no place for this chunk (shadow volume and overflow "
                     "full, or the chunk was lost to out-of-space); attach an overflow volume "
                     "or update the shadow", s->name);
    else if (rc)
        rc = pt_fail(err, PT_E_OFFLINE, "%s of set %s went offline during the write; "
                     "reset the set", side == PT_MASTER ? "master" : "shadow", s->name);
    else if (side == PT_MASTER && (rc = pt_vol_pwrite(&m->vol, buf, len, off)) != 0)
        rc = io_error(s, &m->vol, rc, "writing", err);
    else if (side == PT_SHADOW)
        rc = write_shadow(s, off, buf, len, err);
    if (!rc)
        __atomic_store_n(&s->last_modified, pt_wall_ns(), __ATOMIC_RELAXED);
    pt_unlock_range(m, c0, c1);
    pthread_rwlock_unlock(&m->gate);
    if (cbuf != small)
        free(cbuf);
    return rc;
}

int pt_set_flush(pt_set *s, pt_error *err)
{
    int rc;
    if ((rc = pt_vol_sync(&s->m->vol)) != 0)
        return io_error(s, &s->m->vol, rc, "flushing", err);
    if (s->shadow.fd >= 0 && (rc = pt_vol_sync(&s->shadow)) != 0)
        return io_error(s, &s->shadow, rc, "flushing", err);
    if (s->ov && (rc = pt_vol_sync(&s->ov->vol)) != 0)
        return io_error(s, &s->ov->vol, rc, "flushing", err);
    if (s->ov && (rc = pt_ov_flush(s->ov)) != 0)
        return io_error(s, &s->ov->vol, rc, "flushing", err);
    pthread_mutex_lock(&s->meta_mu);
    s->hdr_dirty = true;   /* records last-modified */
    pthread_mutex_unlock(&s->meta_mu);
    if ((rc = pt_meta_flush(s)) != 0)
        return io_error(s, &s->bitmap, rc, "flushing", err);
    return 0;
}

/* A flush through one side, as a served file's fsync asks for it. The shadow side needs every
 * volume (pt_set_flush). The master needs its own volume alone: the write path made each
 * copy-on-write and bit durable before the master write that needed it, so a shadow, bitmap or
 * overflow volume that is offline, or fails here, never fails a master flush (a file system on
 * the master would abort its journal); the set's offline flags record it instead, and the
 * bitmap kept in memory tells reset which chunks to copy. */
int pt_set_sync(pt_set *s, int side, pt_error *err)
{
    if (s->kind == PT_IMPORTED) {   /* its one volume and its bitmap */
        int rc = pt_import_side(s, &side, err);
        return rc ? rc : pt_set_flush(s, err);
    }
    if (side == PT_SHADOW)
        return pt_set_flush(s, err);
    if (side != PT_MASTER)
        return pt_fail(err, PT_E_INVALID, "side %d is neither master (0) nor shadow (1)", side);
    if (atomic_load(&s->rflags) & PT_F_MASTER_OFFLINE)
        return pt_fail(err, PT_E_OFFLINE, "master volume %s of set %s is offline; reset the set",
                       s->m->vol.path, s->name);
    int rc = pt_vol_sync(&s->m->vol);
    if (rc)
        return io_error(s, &s->m->vol, rc, "flushing", err);
    if (!(atomic_load(&s->rflags) & PT_F_BITMAP_OFFLINE)) {
        pthread_mutex_lock(&s->meta_mu);
        s->hdr_dirty = true;   /* records last-modified */
        pthread_mutex_unlock(&s->meta_mu);
        /* A failure takes the bitmap and the shadow offline (pt_meta_flush), not the master;
         * its result is the flags checked below. */
        if (pt_meta_flush(s) != 0 && !(atomic_load(&s->rflags) & PT_F_BITMAP_OFFLINE))
            pt_set_offline(s, PT_F_BITMAP_OFFLINE);
    }
    /* only a restore in progress ties the master to the shadow side: pt_set_offline took the
     * half-restored master offline with it */
    if (atomic_load(&s->rflags) & PT_F_MASTER_OFFLINE)
        return pt_fail(err, PT_E_OFFLINE, "master of set %s went offline with its shadow side "
                       "during a restore; reset the set", s->name);
    return 0;
}
