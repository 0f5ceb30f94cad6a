/* Overflow volumes: chunk stores shared by several compact dependent sets.
 *
 * Layout: a 4 KiB header (overflow_hdr.c), an allocation bitmap (1 bit per chunk), then the
 * chunks.
 * Ordering: an allocation bit is durable before any set's index entry that points at the chunk
 * (pt_ov_flush before the set's metadata flush), and a chunk is released only after the set's
 * cleared entry is durable (meta.c releases after its flush). A crash can so leak a chunk but
 * never hand one to two sets; leaks are reclaimed when every attached set has been reopened.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Caller holds hdr_mu (so headers land in the order they were encoded) and not mu: the header
 * is encoded under mu and written after it is released, so status and allocation never wait
 * for the device. */
static int write_header(pt_overflow *ov, uint32_t state, pt_error *err)
{
    uint8_t h[PT_HDR_SIZE];
    pthread_mutex_lock(&ov->mu);
    pt_ov_encode(ov, h, state);
    pthread_mutex_unlock(&ov->mu);
    int rc;
    if ((rc = pt_vol_pwrite(&ov->vol, h, sizeof h, 0)) != 0 || (rc = pt_vol_sync(&ov->vol)) != 0) {
        atomic_store(&ov->vol.offline, 1);
        return pt_fail(err, -rc, "overflow volume %s: cannot write its header: %s",
                       ov->vol.path, strerror(-rc));
    }
    return 0;
}

/* Locks and the allocation map. Once the locks exist (ov->eng set), release_all undoes all. */
static int setup(pt_overflow *ov, pt_engine *eng, pt_error *err)
{
    int rc = pthread_mutex_init(&ov->mu, NULL);
    if (rc)
        return pt_fail(err, rc, "out of resources");
    rc = pthread_mutex_init(&ov->hdr_mu, NULL);
    if (rc) {
        rc = pt_fail(err, rc, "out of resources");
        goto out_destroy_mu;
    }
    rc = pt_gc_init(&ov->gc);
    if (rc) {
        rc = pt_fail(err, -rc, "out of resources");
        goto out_destroy_hdr_mu;
    }
    ov->eng = eng;
    uint64_t bm = pt_round_up((ov->nchunks + 7) / 8, PT_PAGE);
    if ((rc = pt_image_alloc(&ov->img, bm, PT_HDR_SIZE)) != 0 ||
        (rc = pt_bits_attach(&ov->alloc, (uint64_t *)ov->img.buf, ov->nchunks, 0)) != 0)
        return pt_fail(err, -rc, "no memory for overflow volume %s", ov->vol.path);
    return 0;

out_destroy_hdr_mu:
    pthread_mutex_destroy(&ov->hdr_mu);
out_destroy_mu:
    pthread_mutex_destroy(&ov->mu);
    return rc;
}

/* Frees everything the handle holds, whatever setup reached. */
static void release_all(pt_overflow *ov)
{
    free(ov->refs.w);
    pt_bits_free(&ov->refs);
    pt_bits_free(&ov->alloc);
    pt_image_free(&ov->img);
    if (ov->eng) {
        pt_gc_destroy(&ov->gc);
        pthread_mutex_destroy(&ov->hdr_mu);
        pthread_mutex_destroy(&ov->mu);
    }
    pt_vol_close(&ov->vol);
    free(ov);
}

/* The last step of init and open: mark the volume in use (header dirty) and hand it to the
 * engine; on failure it is released. */
static int publish(pt_engine *eng, pt_overflow *ov, pt_overflow **out, pt_error *err)
{
    pthread_mutex_lock(&ov->hdr_mu);
    int rc = write_header(ov, PT_STATE_DIRTY, err);
    pthread_mutex_unlock(&ov->hdr_mu);
    if (rc) {
        release_all(ov);
        return rc;
    }
    pthread_mutex_lock(&eng->mu);
    ov->next = eng->overflows;
    eng->overflows = ov;
    pthread_mutex_unlock(&eng->mu);
    *out = ov;
    return 0;
}

static int check_unused(pt_engine *eng, pt_vol *v, pt_error *err)
{
    int rc = 0;
    pthread_mutex_lock(&eng->mu);
    for (pt_overflow *o = eng->overflows; o && !rc; o = o->next)
        if (pt_vol_same(&o->vol, v))
            rc = pt_fail(err, PT_E_IN_USE, "%s is already open as an overflow volume", v->path);
    for (pt_master *m = eng->masters; m && !rc; m = m->next)
        if (pt_vol_same(&m->vol, v))
            rc = pt_fail(err, PT_E_IN_USE, "%s is the master volume of a set", v->path);
    for (pt_set *s = eng->sets; s && !rc; s = s->next)
        if (pt_vol_same(&s->shadow, v) || pt_vol_same(&s->bitmap, v))
            rc = pt_fail(err, PT_E_IN_USE, "%s is a volume of set %s", v->path, s->name);
    pthread_mutex_unlock(&eng->mu);
    return rc;
}

/* The first step of init and open: a handle on the volume, which no other handle holds. */
static int start(pt_engine *eng, const pt_volspec *vol, pt_overflow **ovp, pt_error *err)
{
    pt_overflow *ov = calloc(1, sizeof *ov);
    if (!ov)
        return pt_fail(err, ENOMEM, "out of memory");
    int rc = pt_vol_open(&ov->vol, vol, "overflow", err);
    if (rc)
        goto out_release;
    rc = check_unused(eng, &ov->vol, err);
    if (rc)
        goto out_release;
    *ovp = ov;
    return 0;

out_release:
    release_all(ov);
    return rc;
}

/* The chunks a volume of size bytes holds after its header and allocation map; sets
 * ov->data_off. 0 when not even one fits. */
static uint64_t fit_chunks(pt_overflow *ov, uint64_t size, uint32_t chunk_size)
{
    uint64_t n = size > PT_HDR_SIZE ? (size - PT_HDR_SIZE) / chunk_size : 0;
    for (;;) {
        ov->data_off = pt_round_up(PT_HDR_SIZE + pt_round_up((n + 7) / 8, PT_PAGE), chunk_size);
        if (n == 0 || ov->data_off + n * chunk_size <= size)
            break;
        n--;
    }
    if (n > PT_IDX_OV - 1)
        n = PT_IDX_OV - 1;   /* index entries hold 31 bits of overflow chunk number */
    return n;
}

int pt_overflow_init(pt_engine *eng, const pt_volspec *vol, uint32_t chunk_size,
                     pt_overflow **out, pt_error *err)
{
    if (!chunk_size)
        chunk_size = PT_CHUNK_DEFAULT;
    if (chunk_size < PT_CHUNK_MIN || chunk_size > PT_CHUNK_MAX || (chunk_size & (chunk_size - 1)))
        return pt_fail(err, PT_E_INVALID,
                       "chunk size %u is not a power of two between 4 KiB and 1 MiB", chunk_size);
    pt_overflow *ov;
    int rc = start(eng, vol, &ov, err);
    if (rc)
        return rc;
    ov->chunk = chunk_size;
    ov->nchunks = fit_chunks(ov, ov->vol.size, chunk_size);
    if (ov->nchunks == 0) {
        uint64_t need = pt_round_up(PT_HDR_SIZE + PT_PAGE, chunk_size) + chunk_size;
        rc = pt_fail(err, PT_E_TOO_SMALL,
                     "overflow volume %s is %llu bytes; it needs at least %llu for one chunk",
                     ov->vol.path, (unsigned long long)ov->vol.size, (unsigned long long)need);
        goto out_release;
    }
    pt_uuid_generate(ov->uuid);
    rc = setup(ov, eng, err);
    if (rc)
        goto out_release;
    uint8_t zero[PT_HDR_SIZE] = {0};
    if ((rc = pt_vol_pwrite(&ov->vol, zero, sizeof zero, 0)) != 0 ||
        (rc = pt_vol_zero(&ov->vol, PT_HDR_SIZE, ov->img.size)) != 0) {
        rc = pt_fail(err, -rc, "overflow volume %s: cannot initialise: %s", ov->vol.path,
                     strerror(-rc));
        goto out_release;
    }
    ov->counters_valid = true;
    return publish(eng, ov, out, err);

out_release:
    release_all(ov);
    return rc;
}

int pt_overflow_open(pt_engine *eng, const pt_volspec *vol, pt_overflow **out, pt_error *err)
{
    pt_overflow *ov;
    int rc = start(eng, vol, &ov, err);
    if (rc)
        return rc;
    uint8_t h[PT_HDR_SIZE];
    if (ov->vol.size < PT_HDR_SIZE) {
        rc = pt_fail(err, PT_E_BAD_HEADER,
                     "overflow volume %s: too small to be an overflow volume", ov->vol.path);
        goto out_release;
    }
    rc = pt_vol_pread(&ov->vol, h, sizeof h, 0);
    if (rc) {
        rc = pt_fail(err, -rc, "overflow volume %s: cannot read its header: %s", ov->vol.path,
                     strerror(-rc));
        goto out_release;
    }
    uint32_t state, nsets;
    rc = pt_ov_decode(ov, h, &state, &nsets, err);
    if (rc)
        goto out_release;
    rc = setup(ov, eng, err);
    if (rc)
        goto out_release;
    rc = pt_vol_pread(&ov->vol, ov->img.buf, ov->img.size, PT_HDR_SIZE);
    if (rc) {
        rc = pt_fail(err, -rc, "overflow volume %s: cannot read its allocation map: %s",
                     ov->vol.path, strerror(-rc));
        goto out_release;
    }
    pt_bits_recount(&ov->alloc);
    ov->counters_valid = state == PT_STATE_CLEAN || nsets == 0;
    if (!ov->counters_valid) {
        /* whole pages, as pt_bits_attach wants (calloc maps them lazily) */
        ov->refs.w = calloc(ov->img.size / 8, 8);
        if (!ov->refs.w || pt_bits_attach(&ov->refs, ov->refs.w, ov->nchunks, 0) != 0) {
            rc = pt_fail(err, ENOMEM, "no memory for overflow volume %s", ov->vol.path);
            goto out_release;
        }
    }
    return publish(eng, ov, out, err);

out_release:
    release_all(ov);
    return rc;
}

static void unlink_ov(pt_overflow *ov)
{
    pt_engine *eng = ov->eng;
    pthread_mutex_lock(&eng->mu);
    for (pt_overflow **p = &eng->overflows; *p; p = &(*p)->next)
        if (*p == ov) {
            *p = ov->next;
            break;
        }
    pthread_mutex_unlock(&eng->mu);
}

int pt_overflow_retire(pt_overflow *ov, int wipe, pt_error *err)
{
    pthread_mutex_lock(&ov->hdr_mu);
    pthread_mutex_lock(&ov->mu);
    int nsets = ov->nsets, nopen = ov->nopen, rc = 0;
    bool again = ov->retired;
    if (wipe && !ov->wiped && (nsets || nopen))
        rc = pt_fail(err, PT_E_DEPENDENCY,
                     "overflow volume %s still has %d set(s) attached; detach them first",
                     ov->vol.path, nsets);
    else if (!again && nopen)
        rc = pt_fail(err, PT_E_IN_USE, "overflow volume %s is used by %d open set(s)",
                     ov->vol.path, nopen);
    else
        ov->retired = true;   /* pt_ov_hold refuses from now on: nopen stays 0 */
    pthread_mutex_unlock(&ov->mu);
    if (rc || !wipe || ov->wiped)
        goto out_unlock;
    uint8_t zero[PT_HDR_SIZE] = {0};
    if ((rc = pt_vol_pwrite(&ov->vol, zero, sizeof zero, 0)) != 0 ||
        (rc = pt_vol_sync(&ov->vol)) != 0) {
        rc = pt_fail(err, -rc, "overflow volume %s: cannot wipe its header: %s", ov->vol.path,
                     strerror(-rc));
        goto out_unretire;
    }
    ov->wiped = true;
    goto out_unlock;

out_unretire:
    if (!again) {
        pthread_mutex_lock(&ov->mu);
        ov->retired = false;   /* nothing changed: it stays usable */
        pthread_mutex_unlock(&ov->mu);
    }
out_unlock:
    pthread_mutex_unlock(&ov->hdr_mu);
    return rc;
}

/* What a close leaves on the volume: the allocation map, and a header saying clean when the
 * counters are right. */
static int close_flush(pt_overflow *ov, pt_error *err)
{
    int rc = pt_ov_flush(ov);
    if (rc)
        return pt_fail(err, -rc, "overflow volume %s: cannot write its allocation map: %s",
                       ov->vol.path, strerror(-rc));
    pthread_mutex_lock(&ov->hdr_mu);
    rc = write_header(ov, ov->counters_valid ? PT_STATE_CLEAN : PT_STATE_DIRTY, err);
    pthread_mutex_unlock(&ov->hdr_mu);
    return rc;
}

/* Close (wipe 0) or delete (wipe 1) the handle once no set holds it. */
static int finish(pt_overflow *ov, int wipe, pt_error *err)
{
    int rc = pt_overflow_retire(ov, wipe, err);
    if (rc)
        return rc;
    if (!ov->wiped)   /* deleted (wiped) already: nothing to record */
        rc = close_flush(ov, err);
    unlink_ov(ov);
    release_all(ov);
    return rc;
}

int pt_overflow_close(pt_overflow *ov, pt_error *err) { return finish(ov, 0, err); }

int pt_overflow_delete(pt_overflow *ov, pt_error *err) { return finish(ov, 1, err); }

int pt_overflow_status(pt_overflow *ov, pt_ov_status *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&ov->mu);
    out->chunk_size = ov->chunk;
    out->counters_valid = ov->counters_valid;
    out->offline = atomic_load(&ov->vol.offline) != 0;
    out->nsets = ov->nsets;
    out->chunks_total = ov->nchunks;
    out->chunks_used = ov->alloc.count;
    memcpy(out->uuid, ov->uuid, 16);
    pthread_mutex_unlock(&ov->mu);
    return 0;
}

int pt_overflow_set_uuid(pt_overflow *ov, int i, uint8_t *out16)
{
    pthread_mutex_lock(&ov->mu);
    int rc = 0;
    if (i < 0 || i >= ov->nsets)
        rc = -PT_E_INVALID;
    else
        memcpy(out16, ov->set_uuids[i], 16);
    pthread_mutex_unlock(&ov->mu);
    return rc;
}

/* ---- used by sets ---- */

/* The set's index among the attached ones, -1 if not attached; the caller holds mu. */
static int find_set(const pt_overflow *ov, const uint8_t uuid[16])
{
    for (int i = 0; i < ov->nsets; i++)
        if (memcmp(ov->set_uuids[i], uuid, 16) == 0)
            return i;
    return -1;
}

static int closing(const pt_overflow *ov, pt_error *err)
{
    return pt_fail(err, PT_E_CLOSED, "overflow volume %s is being closed or deleted",
                   ov->vol.path);
}

int pt_ov_alloc(pt_overflow *ov, uint64_t *slot)
{
    if (atomic_load(&ov->vol.offline))
        return -EIO;
    pthread_mutex_lock(&ov->mu);
    int rc = -ENOSPC;
    if (ov->alloc.count < ov->nchunks) {
        for (uint64_t k = 0; k < ov->nchunks; k++) {
            uint64_t i = (ov->hint + k) % ov->nchunks;
            if (!pt_bit_get(&ov->alloc, i)) {
                pt_bit_set(&ov->alloc, i);
                if (ov->refs.w)   /* reconcile pending: count it as referenced */
                    pt_bit_set(&ov->refs, i);
                pt_image_mark(&ov->img, i / 8);
                ov->hint = i + 1;
                *slot = i;
                rc = 0;
                break;
            }
        }
    }
    pthread_mutex_unlock(&ov->mu);
    return rc;
}

void pt_ov_release(pt_overflow *ov, uint64_t slot)
{
    pthread_mutex_lock(&ov->mu);
    if (slot < ov->nchunks && pt_bit_clear(&ov->alloc, slot))
        pt_image_mark(&ov->img, slot / 8);
    pthread_mutex_unlock(&ov->mu);
}

static int ov_flush_fn(void *arg)
{
    pt_overflow *ov = arg;
    pt_staged st;
    pthread_mutex_lock(&ov->mu);
    int rc = pt_image_stage(&ov->img, &st);
    pthread_mutex_unlock(&ov->mu);
    if (rc || !st.n)
        goto out_free;
    rc = pt_staged_write(&ov->vol, PT_HDR_SIZE, &st);
    if (rc)
        goto out_free;
    rc = pt_vol_injected(&ov->vol);
    if (rc)
        goto out_free;
    if (fdatasync(ov->vol.fd) != 0)
        rc = -errno;
out_free:
    pt_staged_free(&st);
    return rc;
}

int pt_ov_flush(pt_overflow *ov)
{
    if (atomic_load(&ov->vol.offline))
        return -EIO;
    int rc = pt_gc_run(&ov->gc, ov_flush_fn, ov);
    if (rc)
        atomic_store(&ov->vol.offline, 1);
    return rc;
}

int pt_ov_hold(pt_overflow *ov, pt_error *err)
{
    pthread_mutex_lock(&ov->mu);
    bool retired = ov->retired;
    if (!retired)
        ov->nopen++;
    pthread_mutex_unlock(&ov->mu);
    return retired ? closing(ov, err) : 0;
}

/* Header changes (add, remove) hold hdr_mu from the change to the durable header: they are
 * serialised, so putting a change back after a failed write cannot undo someone else's. */
int pt_ov_add_set(pt_overflow *ov, const uint8_t uuid[16], pt_error *err)
{
    pthread_mutex_lock(&ov->hdr_mu);
    pthread_mutex_lock(&ov->mu);
    bool found = find_set(ov, uuid) >= 0;
    int rc = 0;
    if (ov->retired)
        rc = closing(ov, err);
    else if (!found && ov->nsets >= PT_OV_MAX_SETS)
        rc = pt_fail(err, PT_E_IN_USE, "overflow volume %s already serves %d sets",
                     ov->vol.path, PT_OV_MAX_SETS);
    else if (!found) {
        ov->counted[ov->nsets] = true;   /* a newly attached set references nothing yet */
        memcpy(ov->set_uuids[ov->nsets++], uuid, 16);
    }
    pthread_mutex_unlock(&ov->mu);
    if (rc || found)
        goto out_unlock;
    rc = write_header(ov, PT_STATE_DIRTY, err);
    if (rc) {   /* take it back: nothing half-changed */
        pthread_mutex_lock(&ov->mu);
        ov->nsets--;
        pthread_mutex_unlock(&ov->mu);
    }
out_unlock:
    pthread_mutex_unlock(&ov->hdr_mu);
    return rc;
}

int pt_ov_remove_set(pt_overflow *ov, const uint8_t uuid[16], pt_error *err)
{
    pthread_mutex_lock(&ov->hdr_mu);
    pthread_mutex_lock(&ov->mu);
    int rc = 0, at = find_set(ov, uuid);
    uint8_t saved[16];
    bool saved_counted = false;
    size_t tail = 0;
    if (at >= 0) {
        memcpy(saved, ov->set_uuids[at], 16);
        saved_counted = ov->counted[at];
        tail = (size_t)(ov->nsets - at - 1);
        memmove(ov->set_uuids[at], ov->set_uuids[at + 1], tail * 16);
        memmove(&ov->counted[at], &ov->counted[at + 1], tail * sizeof(bool));
        ov->nsets--;
    }
    pthread_mutex_unlock(&ov->mu);
    if (at < 0)
        goto out_unlock;
    rc = write_header(ov, PT_STATE_DIRTY, err);
    if (rc) {   /* put it back: nothing half-changed */
        pthread_mutex_lock(&ov->mu);
        memmove(ov->set_uuids[at + 1], ov->set_uuids[at], tail * 16);
        memmove(&ov->counted[at + 1], &ov->counted[at], tail * sizeof(bool));
        memcpy(ov->set_uuids[at], saved, 16);
        ov->counted[at] = saved_counted;
        ov->nsets++;
        pthread_mutex_unlock(&ov->mu);
    }
out_unlock:
    pthread_mutex_unlock(&ov->hdr_mu);
    return rc;
}

/* Count an opening set's references; once every attached set has been counted after an
 * unclean stop, the allocation map is replaced by the references (leaks reclaimed). */
void pt_ov_set_opened(pt_overflow *ov, pt_set *s)
{
    pthread_mutex_lock(&ov->mu);
    int slot = find_set(ov, s->uuid);
    if (!ov->counters_valid && ov->refs.w && slot >= 0 && !ov->counted[slot]) {
        ov->counted[slot] = true;
        for (uint64_t c = 0; s->compact && c < s->nchunks; c++) {
            uint32_t v = s->idx[c];
            if ((v & PT_IDX_OV) && (uint64_t)(v & ~PT_IDX_OV) < ov->nchunks)
                pt_bit_set(&ov->refs, v & ~PT_IDX_OV);
        }
        bool all = true;
        for (int i = 0; i < ov->nsets && all; i++)
            all = ov->counted[i];
        if (all) {
            uint64_t nw = (ov->nchunks + 63) / 64;
            memcpy(ov->alloc.w, ov->refs.w, nw * 8);
            pt_bits_recount(&ov->alloc);
            ov->img.ndirty = UINT64_MAX;   /* rewrite the whole map */
            ov->counters_valid = true;
            /* detach under the lock: pt_ov_alloc looks at refs.w while holding it */
            pt_bits done = ov->refs;
            memset(&ov->refs, 0, sizeof ov->refs);
            pthread_mutex_unlock(&ov->mu);
            free(done.w);
            pt_bits_free(&done);
            return;
        }
    }
    pthread_mutex_unlock(&ov->mu);
}

void pt_ov_set_closed(pt_overflow *ov)
{
    pthread_mutex_lock(&ov->mu);
    ov->nopen--;
    pthread_mutex_unlock(&ov->mu);
}
