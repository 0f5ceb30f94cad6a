/* A set's chunks, in memory: where a chunk lives (addressing, the compact index and its slots),
 * its bits (with the image's dirty map kept right), and marking volumes offline.
 *
 * The leaf of the set layer (see the layering in internal.h): it calls only overflow.c, bits.c
 * and util.c, so meta.c, io.c, copy.c and set.c can all use it without a circle.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

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
    if ((flag & PT_F_BITMAP_OFFLINE) && s->kind == PT_IMPORTED)
        add |= PT_F_MASTER_OFFLINE;   /* an imported volume is written only with its bit */
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

/* ---- bits: every change marks its image page dirty and bumps the generation ---- */

static void mark_bits(pt_set *s, const pt_bits *b, uint64_t c)
{
    pt_image_mark(&s->img, b->img_off + (c / 8));
    s->generation++;
}
void pt_set_D(pt_set *s, uint64_t c) { if (pt_bit_set(&s->D, c)) mark_bits(s, &s->D, c); }
void pt_clear_D(pt_set *s, uint64_t c) { if (pt_bit_clear(&s->D, c)) mark_bits(s, &s->D, c); }
void pt_set_C(pt_set *s, uint64_t c) { if (pt_bit_set(&s->C, c)) mark_bits(s, &s->C, c); }
void pt_clear_C(pt_set *s, uint64_t c) { if (pt_bit_clear(&s->C, c)) mark_bits(s, &s->C, c); }

/* ---- the compact index and its slots ---- */

void pt_idx_put(pt_set *s, uint64_t c, uint32_t v)
{
    __atomic_store_n(&s->idx[c], v, __ATOMIC_RELAXED);
    pt_image_mark(&s->img, s->idx_off - PT_HDR_SIZE + c * 4);
}

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
        pt_slots_release(s, &v, 1);
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

void pt_slots_release(pt_set *s, const uint32_t *rel, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        uint32_t v = rel[i];
        if (v & PT_IDX_OV) {
            if (s->ov)
                pt_ov_release(s->ov, v & ~PT_IDX_OV);
        } else if (v != PT_IDX_NONE && v - 1 < s->shadow_slots) {
            s->slots[(v - 1) / 64] &= ~(1ull << ((v - 1) % 64));
        }
    }
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
