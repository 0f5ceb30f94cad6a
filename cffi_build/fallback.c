/* The fallback record (format: docs/bitmap-format.md): a small file outside the bitmap volume
 * that says, durably, when a set's bitmap went offline and missed changed chunks.
 *
 * A leaf (see the layering in internal.h): io.c and meta.c call it; pt_set_fallback (setctl.c)
 * hands it the descriptor and recovers when it says the bitmap was lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

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

int pt_fb_adopt(pt_set *s, int fd, bool *lost, pt_error *err)
{
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
    *lost = why != NULL;
    return 0;
}
