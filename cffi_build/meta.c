/* The bitmap volume: header format, layout, loading and group-committed flushes.
 * The format is documented in docs/bitmap-format.md; keep the two in step. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static const char MAGIC[8] = {'P', 'T', 'C', 'O', 'P', 'Y', 'B', 'M'};
#define VERSION 1u

/* header field offsets */
enum {
    H_MAGIC = 0, H_VERSION = 8, H_HDRSIZE = 12, H_UUID = 16, H_CHUNK = 32, H_KIND = 36,
    H_FLAGS = 40, H_STATE = 44, H_GEN = 48, H_MSIZE = 56, H_SSIZE = 64, H_NCHUNKS = 72,
    H_SLOTS = 80, H_IDX = 88, H_DBM = 96, H_CBM = 104, H_TOTAL = 112, H_OVUUID = 120,
    H_DELAY = 136, H_UNITS = 140, H_MTIME = 144, H_CRC = PT_HDR_SIZE - 4
};

static void put32(uint8_t *h, int off, uint32_t v) { memcpy(h + off, &v, 4); }
static void put64(uint8_t *h, int off, uint64_t v) { memcpy(h + off, &v, 8); }
static uint32_t get32(const uint8_t *h, int off) { uint32_t v; memcpy(&v, h + off, 4); return v; }
static uint64_t get64(const uint8_t *h, int off) { uint64_t v; memcpy(&v, h + off, 8); return v; }

static uint64_t round_page(uint64_t n) { return (n + PT_PAGE - 1) / PT_PAGE * PT_PAGE; }

int pt_meta_layout(uint64_t master_size, uint64_t shadow_size, uint32_t chunk, int kind,
                   uint64_t *idx_off, uint64_t *dbm_off, uint64_t *cbm_off, uint64_t *total,
                   pt_error *err)
{
    if (chunk < PT_CHUNK_MIN || chunk > PT_CHUNK_MAX || (chunk & (chunk - 1)))
        return pt_fail(err, PT_E_INVALID,
                       "chunk size %u is not a power of two between 4 KiB and 1 MiB", chunk);
    if (kind != PT_INDEPENDENT && kind != PT_DEPENDENT && kind != PT_IMPORTED)
        return pt_fail(err, PT_E_INVALID, "set kind %d is not independent, dependent or "
                       "imported", kind);
    if (master_size == 0)
        return pt_fail(err, PT_E_TOO_SMALL, "the master volume is empty");
    uint64_t nchunks = (master_size + chunk - 1) / chunk;
    bool compact = kind == PT_DEPENDENT && shadow_size < master_size;
    /* compact index entries hold a chunk number in 31 bits; plain bitmaps have no such limit */
    if (nchunks >= (compact ? (uint64_t)PT_IDX_OV : 1ull << 40))
        return pt_fail(err, PT_E_INVALID, "a %smaster of %llu chunks is more than ptcopy can map"
                       "; use a larger chunk size", compact ? "compact set's " : "",
                       (unsigned long long)nchunks);
    uint64_t bm = round_page((nchunks + 7) / 8);
    uint64_t off = PT_HDR_SIZE;
    *idx_off = 0;
    if (compact) {
        *idx_off = off;
        off += round_page(nchunks * 4);
    }
    *dbm_off = off;
    *cbm_off = off + bm;
    *total = off + 2 * bm;
    return 0;
}

int pt_bitmap_size(uint64_t master_size, uint64_t shadow_size, uint32_t chunk_size, int kind,
                   uint64_t *out, pt_error *err)
{
    uint64_t a, b, c;
    if (!chunk_size)
        chunk_size = PT_CHUNK_DEFAULT;
    return pt_meta_layout(master_size, shadow_size, chunk_size, kind, &a, &b, &c, out, err);
}

static void encode_header(pt_set *s, uint8_t *h, uint32_t state)
{
    memset(h, 0, PT_HDR_SIZE);
    memcpy(h + H_MAGIC, MAGIC, 8);
    put32(h, H_VERSION, VERSION);
    put32(h, H_HDRSIZE, PT_HDR_SIZE);
    memcpy(h + H_UUID, s->uuid, 16);
    put32(h, H_CHUNK, s->chunk);
    put32(h, H_KIND, (uint32_t)s->kind);
    put32(h, H_FLAGS, s->pflags);
    put32(h, H_STATE, state);
    put64(h, H_GEN, s->generation);
    put64(h, H_MSIZE, s->master_size);
    put64(h, H_SSIZE, s->shadow_size);
    put64(h, H_NCHUNKS, s->nchunks);
    put64(h, H_SLOTS, s->shadow_slots);
    put64(h, H_IDX, s->idx_off);
    put64(h, H_DBM, s->dbm_off);
    put64(h, H_CBM, s->cbm_off);
    put64(h, H_TOTAL, s->total_size);
    memcpy(h + H_OVUUID, s->ov_uuid, 16);
    put32(h, H_DELAY, atomic_load(&s->delay_ms));
    put32(h, H_UNITS, atomic_load(&s->units));
    put64(h, H_MTIME, s->last_modified);
    put32(h, H_CRC, pt_crc32c(h, H_CRC));
}

static int meta_flush_fn(void *arg);

int pt_meta_peek(pt_vol *v, uint32_t *kind, uint32_t *state)
{
    uint8_t h[PT_HDR_SIZE];
    if (v->size < PT_HDR_SIZE || pt_vol_pread(v, h, sizeof h, 0) != 0 ||
        memcmp(h, MAGIC, 8) != 0 || get32(h, H_CRC) != pt_crc32c(h, H_CRC))
        return -1;
    *kind = get32(h, H_KIND);
    *state = get32(h, H_STATE);
    return 0;
}

int pt_meta_mark_joined(pt_set *o)
{
    uint8_t h[PT_HDR_SIZE];
    encode_header(o, h, PT_STATE_DISABLED);
    int rc = pt_vol_pwrite(&o->bitmap, h, sizeof h, 0);
    return rc ? rc : pt_vol_sync(&o->bitmap);
}

/* Header writes go through the group commit like every flush: runs never overlap and each
 * encodes the header when it starts, so a header encoded earlier can never land on top of a
 * newer one (attach/detach against a flush), and the pages the header refers to are durable
 * before it. */
int pt_meta_write_header(pt_set *s, uint32_t state, pt_error *err)
{
    if (s->bitmap_mem)
        return 0;
    pthread_mutex_lock(&s->meta_mu);
    uint32_t prev = s->hdr_state;
    if (!pt_state_final(s->hdr_state))
        s->hdr_state = state;
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    int rc = pt_gc_run(&s->meta_gc, meta_flush_fn, s);
    if (rc) {
        pthread_mutex_lock(&s->meta_mu);
        if (pt_state_final(state) && !pt_state_final(prev))
            s->hdr_state = prev;   /* the set stays open: later headers say so */
        pthread_mutex_unlock(&s->meta_mu);
        /* the pages staged with it were not written: only a reset may trust the volume again */
        pt_set_offline(s, PT_F_BITMAP_OFFLINE);
        return pt_fail(err, -rc, "bitmap volume %s: cannot write its header: %s", s->bitmap.path,
                       strerror(-rc));
    }
    return 0;
}

/* The in-memory image and the bitmaps and index inside it; pt_meta_free undoes what it got to. */
static int attach_image(pt_set *s)
{
    int rc = pt_image_alloc(&s->img, s->total_size - PT_HDR_SIZE, PT_HDR_SIZE);
    if (rc)
        return rc;
    uint64_t base = PT_HDR_SIZE;
    rc = pt_bits_attach(&s->D, (uint64_t *)(s->img.buf + s->dbm_off - base), s->nchunks,
                        s->dbm_off - base);
    if (rc)
        return rc;
    rc = pt_bits_attach(&s->C, (uint64_t *)(s->img.buf + s->cbm_off - base), s->nchunks,
                        s->cbm_off - base);
    if (rc || !s->compact)
        return rc;
    s->idx = (uint32_t *)(s->img.buf + s->idx_off - base);
    s->slots = calloc((s->shadow_slots + 63) / 64 + 1, 8);
    return s->slots ? 0 : -ENOMEM;
}

void pt_meta_free(pt_set *s)
{
    pt_bits_free(&s->D);
    pt_bits_free(&s->C);
    free(s->slots);
    s->slots = NULL;
    pt_image_free(&s->img);
}

int pt_meta_create(pt_set *s, pt_error *err)
{
    int rc = pt_meta_layout(s->master_size, s->shadow_size, s->chunk, s->kind, &s->idx_off,
                            &s->dbm_off, &s->cbm_off, &s->total_size, err);
    if (rc)
        return rc;
    s->compact = s->idx_off != 0;
    s->nchunks = (s->master_size + s->chunk - 1) / s->chunk;
    s->shadow_slots = s->compact ? s->shadow_size / s->chunk : s->nchunks;
    if (s->compact)
        s->pflags |= PT_PF_COMPACT;
    if (s->compact && s->shadow_slots == 0)
        return pt_fail(err, PT_E_TOO_SMALL,
                       "shadow volume %s (%llu bytes) cannot hold one %u-byte chunk",
                       s->shadow.path, (unsigned long long)s->shadow_size, s->chunk);
    if (!s->bitmap_mem && s->bitmap.size < s->total_size)
        return pt_fail(err, PT_E_TOO_SMALL,
                       "bitmap volume %s is %llu bytes; this set needs %llu bytes",
                       s->bitmap.path, (unsigned long long)s->bitmap.size,
                       (unsigned long long)s->total_size);
    rc = attach_image(s);
    if (rc)
        return pt_fail(err, -rc, "no memory for the bitmaps of %s", s->name);
    if (s->bitmap_mem)
        return 0;
    /* Invalidate any old header first so a crash mid-way never leaves a stale valid set. */
    uint8_t h[PT_HDR_SIZE];
    memset(h, 0, sizeof h);
    if ((rc = pt_vol_pwrite(&s->bitmap, h, sizeof h, 0)) != 0 ||
        (rc = pt_vol_zero(&s->bitmap, PT_HDR_SIZE, s->total_size - PT_HDR_SIZE)) != 0 ||
        (rc = pt_vol_sync(&s->bitmap)) != 0)
        return pt_fail(err, -rc, "bitmap volume %s: cannot initialise: %s", s->bitmap.path,
                       strerror(-rc));
    return pt_meta_write_header(s, PT_STATE_DIRTY, err);
}

static int bad_header(pt_set *s, pt_error *err, const char *why)
{
    return pt_fail(err, PT_E_BAD_HEADER, "bitmap volume %s: %s", s->bitmap.path, why);
}

/* Repairs after an unclean stop: the write path makes a chunk's index entry and its shadow bit
 * durable together before the master write, so a bit without an entry means the master write
 * never happened and the bit can go. Rebuilds the slot allocator from the index. */
static void repair_compact(pt_set *s)
{
    for (uint64_t c = 0; c < s->nchunks; c++) {
        uint32_t v = s->idx[c];
        bool own = pt_bit_get(&s->D, c) || pt_bit_get(&s->C, c);
        if (v == PT_IDX_NONE) {
            if (own && !(s->pflags & PT_PF_OUT_OF_SPACE)) {
                pt_clear_D(s, c);
                pt_clear_C(s, c);
            } else if (own) {
                s->lost++;
            }
            continue;
        }
        if (!own) {   /* allocated but no longer referenced: freed on the next flush */
            pt_idx_put(s, c, PT_IDX_NONE);
            continue;
        }
        if (v & PT_IDX_OV) {
            s->ov_used++;
        } else if (v - 1 < s->shadow_slots) {
            uint64_t slot = v - 1;
            s->slots[slot / 64] |= 1ull << (slot % 64);
            s->slots_used++;
        } else {
            pt_idx_put(s, c, PT_IDX_NONE);   /* out of range: treat as lost */
            s->lost++;
        }
    }
}

int pt_meta_load(pt_set *s, uint64_t expect_master, uint64_t expect_shadow, pt_error *err)
{
    return pt_meta_load_mode(s, PT_LOAD_SET, expect_master, expect_shadow, err);
}

/* What the recorded state allows this load: a released imported bitmap is only joined, an
 * imported one still in use is neither joined (its host still writes) nor opened as a set. */
static int check_state(pt_set *s, int mode, uint32_t state, uint32_t kind, pt_error *err)
{
    if (state == PT_STATE_DISABLED)
        return bad_header(s, err, "belongs to a disabled set");
    if (state == PT_STATE_RELEASED && kind != PT_IMPORTED)
        return bad_header(s, err, "unknown state marker (corrupted)");
    if (state == PT_STATE_RELEASED && mode != PT_LOAD_JOIN)
        return pt_fail(err, PT_E_WRONG_KIND, "bitmap volume %s holds a released imported "
                       "shadow: join it on the host that exported the shadow; it opens as "
                       "no set", s->bitmap.path);
    if (state != PT_STATE_RELEASED && state != PT_STATE_CLEAN && state != PT_STATE_DIRTY)
        return bad_header(s, err, "unknown state marker (corrupted)");
    if (mode == PT_LOAD_JOIN && kind == PT_IMPORTED && state != PT_STATE_RELEASED)
        return pt_fail(err, PT_E_IN_USE, "bitmap volume %s belongs to a shadow that is still "
                       "imported on the other host, which may still write it; release it "
                       "there first", s->bitmap.path);
    return 0;
}

int pt_meta_load_mode(pt_set *s, int mode, uint64_t expect_master, uint64_t expect_shadow,
                      pt_error *err)
{
    uint8_t h[PT_HDR_SIZE];
    if (s->bitmap.size < PT_HDR_SIZE)
        return bad_header(s, err, "too small to hold a ptcopy bitmap header");
    int rc = pt_vol_pread(&s->bitmap, h, sizeof h, 0);
    if (rc)
        return pt_fail(err, -rc, "bitmap volume %s: cannot read its header: %s", s->bitmap.path,
                       strerror(-rc));
    if (memcmp(h, MAGIC, 8) != 0) {
        bool empty = true;
        for (size_t i = 0; i < sizeof h && empty; i++)
            empty = h[i] == 0;
        return bad_header(s, err, empty ? "empty: holds no ptcopy set"
                                        : "not a ptcopy bitmap (foreign or corrupted header)");
    }
    if (get32(h, H_VERSION) != VERSION)
        return bad_header(s, err, "written by an unsupported format version");
    if (get32(h, H_CRC) != pt_crc32c(h, H_CRC))
        return bad_header(s, err, "header checksum mismatch (corrupted)");
    uint32_t state = get32(h, H_STATE);
    rc = check_state(s, mode, state, get32(h, H_KIND), err);
    if (rc)
        return rc;
    memcpy(s->uuid, h + H_UUID, 16);
    s->chunk = get32(h, H_CHUNK);
    s->kind = (int)get32(h, H_KIND);
    s->pflags = get32(h, H_FLAGS);
    s->generation = get64(h, H_GEN);
    s->master_size = get64(h, H_MSIZE);
    s->shadow_size = get64(h, H_SSIZE);
    memcpy(s->ov_uuid, h + H_OVUUID, 16);
    atomic_store(&s->delay_ms, get32(h, H_DELAY));
    atomic_store(&s->units, get32(h, H_UNITS));
    s->last_modified = get64(h, H_MTIME);
    uint64_t idx_off, dbm, cbm, total;
    pt_error lerr = {0};
    if (pt_meta_layout(s->master_size, s->shadow_size, s->chunk, s->kind, &idx_off, &dbm, &cbm,
                       &total, &lerr) != 0)
        return bad_header(s, err, "describes an impossible layout (corrupted)");
    s->idx_off = idx_off;
    s->dbm_off = dbm;
    s->cbm_off = cbm;
    s->total_size = total;
    s->compact = idx_off != 0;
    s->nchunks = (s->master_size + s->chunk - 1) / s->chunk;
    s->shadow_slots = s->compact ? s->shadow_size / s->chunk : s->nchunks;
    if (get64(h, H_NCHUNKS) != s->nchunks || get64(h, H_IDX) != idx_off ||
        get64(h, H_DBM) != dbm || get64(h, H_CBM) != cbm || get64(h, H_TOTAL) != total)
        return bad_header(s, err, "layout fields disagree (corrupted)");
    if (s->bitmap.size < total)
        return bad_header(s, err, "truncated: smaller than the layout its header records");
    /* a joined imported bitmap maps the other host's volume: join compares the chunks */
    bool sized = !(mode == PT_LOAD_JOIN && s->kind == PT_IMPORTED);
    if (sized && expect_master != s->master_size)
        return pt_fail(err, PT_E_SIZE_MISMATCH,
                       "master volume is %llu bytes but bitmap %s records %llu",
                       (unsigned long long)expect_master, s->bitmap.path,
                       (unsigned long long)s->master_size);
    if (sized && expect_shadow < s->shadow_size)
        return pt_fail(err, PT_E_SIZE_MISMATCH,
                       "shadow volume is %llu bytes but bitmap %s records %llu",
                       (unsigned long long)expect_shadow, s->bitmap.path,
                       (unsigned long long)s->shadow_size);
    rc = attach_image(s);
    if (rc)
        return pt_fail(err, -rc, "no memory for the bitmaps of %s", s->bitmap.path);
    rc = pt_vol_pread(&s->bitmap, s->img.buf, s->img.size, PT_HDR_SIZE);
    if (rc)
        return pt_fail(err, -rc, "bitmap volume %s: cannot read its bitmaps: %s",
                       s->bitmap.path, strerror(-rc));
    /* Bits past the last chunk can only come from corruption: they are dropped (and the page
     * rewritten), since nothing could ever copy or clear them. */
    if (pt_bits_recount(&s->D))
        pt_image_mark(&s->img, s->D.img_off + (s->D.npages - 1) * PT_PAGE);
    if (pt_bits_recount(&s->C))
        pt_image_mark(&s->img, s->C.img_off + (s->C.npages - 1) * PT_PAGE);
    if (!(s->pflags & PT_PF_COPYING))
        s->pflags &= ~PT_PF_SUSPENDED;   /* only a copy can be suspended */
    if (!(s->pflags & PT_PF_COPYING) && s->C.count) {
        /* copy bits left without a copy (a torn flush): they still mark differences */
        pt_bits_or(&s->D, &s->C, pt_image_mark, &s->img);
        pt_bits_zero(&s->C, pt_image_mark, &s->img);
    }
    if (state == PT_STATE_DIRTY)
        atomic_fetch_or(&s->rflags, PT_F_RECOVERED);
    if (s->pflags & PT_PF_EXPORTED)
        atomic_fetch_or(&s->rflags, PT_F_EXPORTED);
    if (s->pflags & PT_PF_NEED_RESYNC)   /* see set_teardown: reset brings it back */
        atomic_fetch_or(&s->rflags, PT_F_SHADOW_OFFLINE | PT_F_BITMAP_OFFLINE);
    if (s->compact)
        repair_compact(s);
    return 0;
}

static int bitmap_sync(pt_set *s)
{
    int inj = pt_vol_injected(&s->bitmap);
    if (inj)
        return inj;
    return fdatasync(s->bitmap.fd) ? -errno : 0;
}

static int meta_flush_fn(void *arg)
{
    pt_set *s = arg;
    pt_staged st;
    uint8_t h[PT_HDR_SIZE];
    pthread_mutex_lock(&s->meta_mu);
    bool whole = s->img.ndirty == UINT64_MAX;   /* a rewrite: every bit in memory goes out */
    int rc = pt_image_stage(&s->img, &st);
    bool hdr = s->hdr_dirty;
    bool resync = s->pflags & PT_PF_NEED_RESYNC;
    if (hdr)
        encode_header(s, h, s->hdr_state);
    s->hdr_dirty = false;
    uint32_t *rel = s->rel;
    uint64_t nrel = s->nrel;
    if (!rc) {
        s->rel = NULL;
        s->nrel = s->relcap = 0;
    }
    pthread_mutex_unlock(&s->meta_mu);
    if (rc)
        return rc;
    /* Pages first, header last: the header (copy state) is the commit record. A tear leaves
     * bits without the header that uses them, which open folds into the shadow bitmap. */
    rc = pt_staged_write(&s->bitmap, PT_HDR_SIZE, &st);
    if (!rc && st.n && hdr)
        rc = bitmap_sync(s);
    /* A header asking for a resync is safe on top of any pages: the next open trusts none of
     * them. It is written even when the pages failed, so the next open knows. */
    if ((!rc || resync) && hdr) {
        int r = pt_vol_pwrite(&s->bitmap, h, sizeof h, 0);
        if (!r)
            r = bitmap_sync(s);
        if (!rc)
            rc = r;
    } else if (!rc && st.n) {
        rc = bitmap_sync(s);
    }
    pt_staged_free(&st);
    if (!rc && nrel) {   /* the entries that pointed at these slots are cleared on disk now */
        pthread_mutex_lock(&s->meta_mu);
        pt_slots_release(s, rel, nrel);
        pthread_mutex_unlock(&s->meta_mu);
    }
    free(rel);   /* on failure the slots leak, which is safe: they are never handed out twice */
    /* The bitmap holds every bit in memory now, the complete record of what changed while it
     * was offline: the fallback record need not declare it lost any more. */
    if (!rc && whole && hdr)
        pt_fb_clear(s);
    return rc;
}

/* Writes the whole in-memory image and the header again, whatever the bitmap's offline flag
 * says: after the bitmap failed nobody knows which of its pages landed, and the bits in memory
 * are the only complete record of what changed meanwhile. */
int pt_meta_rewrite(pt_set *s)
{
    if (s->bitmap_mem)
        return 0;
    pthread_mutex_lock(&s->meta_mu);
    s->img.ndirty = UINT64_MAX;
    s->hdr_dirty = true;
    pthread_mutex_unlock(&s->meta_mu);
    return pt_gc_run(&s->meta_gc, meta_flush_fn, s);
}

int pt_meta_flush(pt_set *s)
{
    if (s->bitmap_mem)
        return 0;
    if (atomic_load(&s->rflags) & PT_F_BITMAP_OFFLINE)
        return -EIO;
    int rc = pt_gc_run(&s->meta_gc, meta_flush_fn, s);
    if (rc)
        pt_set_offline(s, PT_F_BITMAP_OFFLINE);
    return rc;
}
