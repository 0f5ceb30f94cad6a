/* device-mapper control-node plumbing shared by dm.c (queries) and dm_run.c (transactions).
 * Private to those two files; the kernel's structures come from <linux/dm-ioctl.h>. */
#ifndef PTCOPY_DMCTL_H
#define PTCOPY_DMCTL_H

#include <linux/dm-ioctl.h>

#include "internal.h"
#include "ptcopy_dm.h"

#define DM_CONTROL "/dev/mapper/control"
#define DM_BUF_START 16384u
#define DM_BUF_MAX (16u << 20)

/* A dm_ioctl buffer: header, then payload. */
typedef struct dmbuf {
    struct dm_ioctl *io;
    size_t size;
} dmbuf;

/* A descriptor of the control node, or a negative code. */
int pt_dmc_open(pt_error *err);
/* Refuses what the kernel would not take as a device name. */
int pt_dmc_name_ok(const char *name, pt_error *err);
int pt_dmc_buf_init(dmbuf *b, size_t size, const char *name, uint32_t flags, pt_error *err);
static inline void *pt_dmc_payload(dmbuf *b) { return (char *)b->io + sizeof(struct dm_ioctl); }
/* Issue cmd; grow the buffer and retry while the kernel says it was too small (only for
 * requests without input payload: may_grow). */
int pt_dmc_call(int fd, unsigned long cmd, dmbuf *b, bool may_grow, pt_error *err);
/* Resume name on fd (a device without a loaded table keeps its live one). */
int pt_dmc_resume(int fd, const char *name, pt_error *err);

#endif
