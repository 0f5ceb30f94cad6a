/* The commit of a write: what its preparation copied and the bits it changes become durable,
 * in the order the crash-safety rules need, before the caller's data is written.
 *
 * Preparation (io.c) copies point-in-time data but does not touch the bits in memory: it
 * records the changes in the write's pt_wctx. Here, for every set the write involves:
 *   1. data syncs (master, shadow, overflow data): the copied point-in-time data is durable;
 *   2. overflow flushes: allocation bits durable before any index entry that uses them;
 *   3. the bit changes go into memory, then the metadata flush makes them durable.
 * Every sync and flush is group-committed, so concurrent writers (several FUSE threads, a
 * queue depth of requests) share one sync of each kind per batch.
 *
 * Why the bits wait for step 3: a metadata flush writes every dirty page in memory, whoever
 * dirtied it. Were a writer's shadow bit set before its data sync, a concurrent writer's flush
 * could make that bit durable while the data it vouches for is still in the page cache; after a
 * power cut the bit would send shadow reads to data that never landed (and a cleared copy bit
 * would drop a chunk the copy still has to move). Set after the data sync, a bit can only reach
 * the disk after its data.
 */
#include <errno.h>

#include "internal.h"

void pt_vol_failed(pt_set *s, pt_vol *v)
{
    unsigned f = v == &s->m->vol ? PT_F_MASTER_OFFLINE
               : v == &s->shadow ? PT_F_SHADOW_OFFLINE
               : (s->ov && v == &s->ov->vol) ? PT_F_OVERFLOW_OFFLINE : PT_F_BITMAP_OFFLINE;
    if (f == PT_F_OVERFLOW_OFFLINE)
        atomic_store(&v->offline, 1);
    pt_set_offline(s, f);
}

/* Step 3's first half: the recorded bit changes, in memory, under meta_mu. */
static void apply_bits(pt_wctx *w, uint64_t nch)
{
    pt_set *s = w->s;
    if (!w->bitop)
        return;
    bool any = false;
    for (uint64_t i = 0; i < nch && !any; i++)
        any = w->bitop[i] != 0;
    if (!any)
        return;
    pthread_mutex_lock(&s->meta_mu);
    for (uint64_t i = 0; i < nch; i++) {
        if (!w->bitop[i])
            continue;
        if (w->bitop[i] == PT_BIT_D_NOT_C)
            pt_clear_C(s, w->c0 + i);
        pt_set_D(s, w->c0 + i);
        w->bitop[i] = 0;
    }
    pthread_mutex_unlock(&s->meta_mu);
}

int pt_cow_commit(pt_master *m, pt_wctx *ws, int n, int side, uint64_t nch)
{
    bool master_synced = false;
    int rc = 0;
    /* 1. the point-in-time data, every set's, before any of their bits */
    for (int i = 0; i < n; i++) {
        pt_wctx *w = &ws[i];
        pt_set *s = w->s;
        if (w->master_data && !master_synced) {
            master_synced = true;
            if (pt_vol_sync(&m->vol) != 0) {
                pt_vol_failed(s, &m->vol);
                rc = -EIO;
            }
        }
        if (w->shadow_data && pt_vol_sync(&s->shadow) != 0)
            pt_vol_failed(s, &s->shadow);
        if (w->ov_data && s->ov && pt_vol_sync(&s->ov->vol) != 0)
            pt_vol_failed(s, &s->ov->vol);
    }
    /* 2. overflow allocation bits */
    for (int i = 0; i < n; i++) {
        pt_set *s = ws[i].s;
        if (ws[i].ov_meta && s->ov && pt_ov_flush(s->ov) != 0)
            pt_set_offline(s, PT_F_OVERFLOW_OFFLINE);
    }
    /* 3. the bits. A failed data sync took the shadow offline above: its bits still go in, as
     * the record of what differs, for the reset that brings the shadow back. */
    for (int i = 0; i < n; i++) {
        pt_wctx *w = &ws[i];
        pt_set *s = w->s;
        apply_bits(w, nch);
        /* A failure takes the bitmap (and so the shadow) offline; the bits stay in memory, and
         * the fallback record says durably, before the caller's write is issued, that the
         * bitmap is lost (write-intent, one level up), so a crash cannot make an update miss
         * them. */
        if (w->meta && pt_meta_flush(s) != 0)
            (void)pt_fb_lost(s);   /* a failure shows as the set's UNRECORDED flag */
        unsigned f = atomic_load(&s->rflags);
        if (side == PT_SHADOW && (f & PT_F_SHADOW_OFFLINE))
            rc = -EIO;
        if (f & PT_F_MASTER_OFFLINE && (side == PT_MASTER || w->master_data))
            rc = -EIO;
    }
    return rc;
}
