/* Direct I/O for the copier: see direct_io.h. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "direct_io.h"

/* The alignment direct I/O needs on fd, or 0 when it cannot do direct I/O at all. */
static uint32_t dio_align(int fd, bool is_blk)
{
    uint32_t align = PT_PAGE;   /* what every Linux file system and device accepts */
#ifdef STATX_DIOALIGN
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
        if (sx.stx_dio_offset_align == 0 || sx.stx_dio_mem_align > PT_DIO_MEM_ALIGN)
            return 0;   /* the file system says no, or wants buffers we do not have */
        if (sx.stx_dio_offset_align > align)
            align = sx.stx_dio_offset_align;
        return align;
    }
#endif
    int lbs = 0;
    if (is_blk && ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0 && (uint32_t)lbs > align)
        align = (uint32_t)lbs;
    return align;
}

void pt_dio_open(pt_dio *d, pt_vol *v, bool write)
{
    d->v = v;
    d->fd = -1;
    d->align = 0;
    atomic_store(&d->on, false);
    if (v->fd < 0)
        return;
    /* A new open file description (a dup would share the flags of v's): through /proc, which
     * works for a descriptor the caller passed in as well as for one we opened by path. Not
     * O_EXCL: v's descriptor already holds a block device exclusively for this process. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", v->fd);
    int fd = open(path, (write ? O_WRONLY : O_RDONLY) | O_DIRECT | O_CLOEXEC);
    if (fd < 0)
        return;   /* refused (no O_DIRECT here, no /proc): buffered it is */
    uint32_t align = dio_align(fd, v->is_blk);
    if (align == 0 || align > PT_DIO_MEM_ALIGN * 256u) {
        (void)close(fd);
        return;
    }
    d->fd = fd;
    d->align = align;
    atomic_store(&d->on, true);
}

void pt_dio_close(pt_dio *d)
{
    if (d->fd >= 0)
        (void)close(d->fd);   /* only reads and writes waited on already went through it */
    d->fd = -1;
    atomic_store(&d->on, false);
}

bool pt_dio_fits(pt_dio *d, uint64_t off, uint64_t len)
{
    return atomic_load(&d->on) && off % d->align == 0 && len % d->align == 0;
}

/* Direct while *direct holds and the kernel takes it: pt_fd_rw gives -EINVAL for a request it
 * refuses, which moved nothing unless a short transfer left an unaligned rest. */
static int rw(pt_dio *d, void *buf, size_t len, uint64_t off, bool write, bool *direct)
{
    if (*direct && !pt_dio_fits(d, off, len))
        *direct = false;
    if (*direct) {
        int rc = pt_vol_injected(d->v);
        if (rc)
            return rc;
        size_t done;
        rc = pt_fd_rw(d->fd, buf, len, off, write, &done);
        if (rc != -EINVAL)
            return rc;
        /* refused (a short transfer left an unaligned rest, or the file system changed its
         * mind): this and every later request go buffered */
        atomic_store(&d->on, false);
        *direct = false;
        buf = (uint8_t *)buf + done;
        len -= done;
        off += done;
    }
    return write ? pt_vol_pwrite(d->v, buf, len, off) : pt_vol_pread(d->v, buf, len, off);
}

int pt_dio_pread(pt_dio *d, void *buf, size_t len, uint64_t off, bool *direct)
{
    return rw(d, buf, len, off, false, direct);
}

int pt_dio_pwrite(pt_dio *d, const void *buf, size_t len, uint64_t off, bool *direct)
{
    return rw(d, (void *)buf, len, off, true, direct);
}
