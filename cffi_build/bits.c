/* Bitmaps with per-page population counts, and metadata images with dirty-page tracking.
 *
 * A 64 TiB volume at 32 KiB chunks has 2^31 chunks: 256 MiB per bitmap. Scans skip pages
 * whose count is zero, so finding the few set bits of a sparse bitmap touches only the
 * 256 KiB of counters, not the bitmap itself. Words are written with atomic RMW because
 * readers test bits without the metadata lock (they hold the chunk's stripe instead).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WORDS_PER_PAGE (PT_PAGE / 8u)

int pt_bits_attach(pt_bits *b, uint64_t *words, uint64_t nbits, uint64_t img_off)
{
    b->w = words;
    b->nbits = nbits;
    b->npages = (nbits + PT_BITS_PER_PAGE - 1) / PT_BITS_PER_PAGE;
    b->img_off = img_off;
    /* fresh memory counts zero; whoever fills the words from disk calls pt_bits_recount */
    b->pcnt = calloc(b->npages ? b->npages : 1, sizeof *b->pcnt);
    b->count = 0;
    return b->pcnt ? 0 : -ENOMEM;
}

void pt_bits_free(pt_bits *b)
{
    free(b->pcnt);
    b->pcnt = NULL;
}

uint64_t pt_bits_recount(pt_bits *b)
{
    uint64_t nw = (b->nbits + 63) / 64;
    uint64_t stray = 0;
    /* Padding past the last chunk: pt_bits_next never returns those bits, so a count that
     * included them would never reach zero (a copier waiting for it would spin). */
    if (b->nbits & 63) {
        uint64_t keep = (1ull << (b->nbits & 63)) - 1;
        stray += (uint64_t)__builtin_popcountll(b->w[nw - 1] & ~keep);
        b->w[nw - 1] &= keep;
    }
    for (uint64_t w = nw; w < b->npages * WORDS_PER_PAGE; w++) {
        stray += (uint64_t)__builtin_popcountll(b->w[w]);
        b->w[w] = 0;
    }
    b->count = 0;
    for (uint64_t p = 0; p < b->npages; p++) {
        uint32_t n = 0;
        uint64_t w0 = p * WORDS_PER_PAGE;
        uint64_t w1 = w0 + WORDS_PER_PAGE;
        if (w1 > nw)
            w1 = nw;
        for (uint64_t w = w0; w < w1; w++)
            n += (uint32_t)__builtin_popcountll(b->w[w]);
        b->pcnt[p] = n;
        b->count += n;
    }
    return stray;
}

bool pt_bit_set(pt_bits *b, uint64_t i)
{
    uint64_t m = 1ull << (i & 63);
    uint64_t old = __atomic_fetch_or(&b->w[i >> 6], m, __ATOMIC_RELAXED);
    if (old & m)
        return false;
    b->pcnt[i / PT_BITS_PER_PAGE]++;
    b->count++;
    return true;
}

bool pt_bit_clear(pt_bits *b, uint64_t i)
{
    uint64_t m = 1ull << (i & 63);
    uint64_t old = __atomic_fetch_and(&b->w[i >> 6], ~m, __ATOMIC_RELAXED);
    if (!(old & m))
        return false;
    b->pcnt[i / PT_BITS_PER_PAGE]--;
    b->count--;
    return true;
}

uint64_t pt_bits_next(const pt_bits *b, uint64_t from)
{
    while (from < b->nbits) {
        uint64_t p = from / PT_BITS_PER_PAGE;
        if (__atomic_load_n(&b->pcnt[p], __ATOMIC_RELAXED) == 0) {
            from = (p + 1) * PT_BITS_PER_PAGE;
            continue;
        }
        uint64_t wi = from >> 6;
        uint64_t wend = (p + 1) * WORDS_PER_PAGE;
        uint64_t word = __atomic_load_n(&b->w[wi], __ATOMIC_RELAXED) & (~0ull << (from & 63));
        for (;;) {
            if (word) {
                uint64_t i = (wi << 6) + (uint64_t)__builtin_ctzll(word);
                return i < b->nbits ? i : b->nbits;
            }
            if (++wi >= wend)
                break;
            word = __atomic_load_n(&b->w[wi], __ATOMIC_RELAXED);
        }
        from = (p + 1) * PT_BITS_PER_PAGE;
    }
    return b->nbits;
}

uint64_t pt_bits_run(const pt_bits *b, uint64_t from, uint64_t max)
{
    uint64_t n = 0;
    while (n < max && from + n < b->nbits && pt_bit_get(b, from + n))
        n++;
    return n;
}

static uint64_t page_words(const pt_bits *b, uint64_t p)
{
    uint64_t nw = (b->nbits + 63) / 64;
    uint64_t w0 = p * WORDS_PER_PAGE;
    return nw - w0 < WORDS_PER_PAGE ? nw - w0 : WORDS_PER_PAGE;
}

void pt_bits_or(pt_bits *dst, const pt_bits *src, pt_mark_fn mark, void *ctx)
{
    for (uint64_t p = 0; p < src->npages; p++) {
        if (src->pcnt[p] == 0)
            continue;
        uint64_t w0 = p * WORDS_PER_PAGE, nw = page_words(src, p);
        uint32_t n = 0;
        bool changed = false;
        for (uint64_t w = w0; w < w0 + nw; w++) {
            uint64_t add = src->w[w];
            uint64_t old = __atomic_fetch_or(&dst->w[w], add, __ATOMIC_RELAXED);
            changed |= (old | add) != old;
            n += (uint32_t)__builtin_popcountll(old | add);
        }
        dst->count += n - dst->pcnt[p];
        dst->pcnt[p] = n;
        if (changed)   /* an unchanged page is on disk already or still marked dirty */
            mark(ctx, dst->img_off + p * PT_PAGE);
    }
}

void pt_bits_zero(pt_bits *b, pt_mark_fn mark, void *ctx)
{
    for (uint64_t p = 0; p < b->npages; p++) {
        if (b->pcnt[p] == 0)
            continue;
        uint64_t w0 = p * WORDS_PER_PAGE, nw = page_words(b, p);
        for (uint64_t w = w0; w < w0 + nw; w++)
            __atomic_store_n(&b->w[w], 0, __ATOMIC_RELAXED);
        b->count -= b->pcnt[p];
        b->pcnt[p] = 0;
        mark(ctx, b->img_off + p * PT_PAGE);
    }
}

void pt_bits_fill(pt_bits *b, pt_mark_fn mark, void *ctx)
{
    uint64_t nw = (b->nbits + 63) / 64;
    for (uint64_t p = 0; p < b->npages; p++) {
        uint64_t w0 = p * WORDS_PER_PAGE, n = page_words(b, p);
        bool changed = false;
        for (uint64_t w = w0; w < w0 + n; w++) {
            uint64_t v = ~0ull;
            if (w == nw - 1 && (b->nbits & 63))
                v = (1ull << (b->nbits & 63)) - 1;
            changed |= __atomic_exchange_n(&b->w[w], v, __ATOMIC_RELAXED) != v;
        }
        if (changed)
            mark(ctx, b->img_off + p * PT_PAGE);
    }
    pt_bits_recount(b);
}

/* ---- images ---- */

int pt_image_alloc(pt_image *im, uint64_t size, uint64_t file_off)
{
    memset(im, 0, sizeof *im);
    uint64_t pages = size / PT_PAGE;
    /* calloc of a large region maps zero pages lazily: a sparse 64 TiB set costs little */
    im->buf = calloc(size ? size : PT_PAGE, 1);
    im->pdirty = calloc(pages ? pages : 1, 1);
    if (!im->buf || !im->pdirty) {
        pt_image_free(im);
        return -ENOMEM;
    }
    im->size = size;
    im->file_off = file_off;
    return 0;
}

void pt_image_free(pt_image *im)
{
    free(im->buf);
    free(im->pdirty);
    free(im->dlist);
    memset(im, 0, sizeof *im);
}

void pt_image_mark(void *arg, uint64_t img_off)
{
    pt_image *im = arg;
    uint64_t p = img_off / PT_PAGE;
    if (im->ndirty == UINT64_MAX || im->pdirty[p])
        return;
    if (im->ndirty == im->dcap) {
        uint64_t cap = im->dcap ? im->dcap * 2 : 64;
        uint64_t *n = realloc(im->dlist, cap * sizeof *n);
        if (!n) {
            /* Cannot track it: leave the page clean-marked but remember to rewrite all. A later
             * stage finds ndirty == UINT64_MAX and writes the whole image. */
            im->ndirty = UINT64_MAX;
            return;
        }
        im->dlist = n;
        im->dcap = cap;
    }
    im->pdirty[p] = 1;
    im->dlist[im->ndirty++] = p;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int pt_image_stage(pt_image *im, pt_staged *st)
{
    memset(st, 0, sizeof *st);
    uint64_t pages = im->size / PT_PAGE;
    bool all = im->ndirty == UINT64_MAX;
    uint64_t n = all ? pages : im->ndirty;
    if (n == 0)
        return 0;
    st->pages = malloc(n * sizeof *st->pages);
    st->data = malloc(n * PT_PAGE);
    if (!st->pages || !st->data) {
        pt_staged_free(st);
        return -ENOMEM;   /* the dirty marks stay: a later flush retries */
    }
    for (uint64_t i = 0; i < n; i++)
        st->pages[i] = all ? i : im->dlist[i];
    qsort(st->pages, n, sizeof *st->pages, cmp_u64);
    for (uint64_t i = 0; i < n; i++) {
        memcpy(st->data + i * PT_PAGE, im->buf + st->pages[i] * PT_PAGE, PT_PAGE);
        im->pdirty[st->pages[i]] = 0;
    }
    st->n = n;
    im->ndirty = 0;
    return 0;
}

int pt_staged_write(pt_vol *v, uint64_t file_off, pt_staged *st)
{
    uint64_t i = 0;
    while (i < st->n) {
        uint64_t j = i + 1;   /* coalesce neighbouring pages into one write */
        while (j < st->n && st->pages[j] == st->pages[j - 1] + 1 && j - i < 256)
            j++;
        int rc = pt_vol_pwrite(v, st->data + i * PT_PAGE, (j - i) * PT_PAGE,
                               file_off + st->pages[i] * PT_PAGE);
        if (rc)
            return rc;
        i = j;
    }
    return 0;
}

void pt_staged_free(pt_staged *st)
{
    free(st->pages);
    free(st->data);
    memset(st, 0, sizeof *st);
}
