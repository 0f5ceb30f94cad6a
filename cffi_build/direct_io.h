/* Direct I/O for the copier (copier.c only): a second descriptor on a volume, opened with
 * O_DIRECT, so that a copy moves its data without the page cache and many requests reach the
 * device at once. Layering: beside util.c (it uses pt_vol only).
 *
 * Direct I/O is an optimisation, never a requirement: a volume whose file system or device
 * refuses O_DIRECT, a range that is not aligned (the short last chunk of a volume), or a request
 * the kernel refuses with EINVAL all go through the volume's ordinary buffered descriptor.
 */
#ifndef PTCOPY_DIRECT_IO_H
#define PTCOPY_DIRECT_IO_H

#include "internal.h"

#define PT_DIO_MEM_ALIGN 4096u   /* buffers the copier hands to direct I/O are aligned to it */

typedef struct pt_dio {
    pt_vol *v;            /* the volume: its buffered descriptor, fault injection */
    int fd;               /* O_DIRECT descriptor on the same file or device, or -1 */
    uint32_t align;       /* offsets and lengths of direct requests are multiples of it */
    atomic_bool on;       /* cleared for good when the kernel refuses a direct request */
} pt_dio;

/* Opens v for direct I/O (for writing when write); on any refusal d stays buffered-only. */
void pt_dio_open(pt_dio *d, pt_vol *v, bool write);
void pt_dio_close(pt_dio *d);
/* Whether a request of len bytes at off goes direct (buf must be PT_DIO_MEM_ALIGN aligned). */
bool pt_dio_fits(pt_dio *d, uint64_t off, uint64_t len);
/* Whole-range reads and writes: direct when *direct (and the kernel accepts it), else buffered;
 * *direct says on return which one was used. 0 or -errno, like pt_vol_pread/pt_vol_pwrite. */
int pt_dio_pread(pt_dio *d, void *buf, size_t len, uint64_t off, bool *direct);
int pt_dio_pwrite(pt_dio *d, const void *buf, size_t len, uint64_t off, bool *direct);

#endif
