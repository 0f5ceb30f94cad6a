/* Errors, clocks, checksums, volumes and group commit. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int pt_fail(pt_error *err, int code, const char *fmt, ...)
{
    if (err && err->code == 0) {   /* keep the first failure: it is the cause */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return -code;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
uint64_t pt_now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
uint64_t pt_wall_ns(void) { return clock_ns(CLOCK_REALTIME); }

struct timespec pt_deadline_ms(uint64_t ms)
{
    uint64_t ns = pt_now_ns() + ms * 1000000ull;
    return (struct timespec){(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
}

/* CRC-32C (Castagnoli), bitwise: used only on 4 KiB headers, so no table is needed. */
uint32_t pt_crc32c(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

void pt_uuid_generate(uint8_t out[16])
{
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom(out + got, 16 - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* no entropy source: fall back to time, still unique enough per host */
            uint64_t t = pt_wall_ns() ^ ((uint64_t)getpid() << 32);
            memcpy(out, &t, 8);
            t = pt_now_ns();
            memcpy(out + 8, &t, 8);
            break;
        }
        got += (size_t)n;
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);  /* RFC 4122 version 4 */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

bool pt_uuid_is_zero(const uint8_t u[16])
{
    for (int i = 0; i < 16; i++)
        if (u[i])
            return false;
    return true;
}

/* ---- group commit ---- */

int pt_gc_init(pt_gcommit *g)
{
    memset(g, 0, sizeof *g);
    int rc = pthread_mutex_init(&g->mu, NULL);
    if (rc)
        return -rc;
    rc = pthread_cond_init(&g->cv, NULL);
    if (rc)
        goto out_destroy_mu;
    return 0;

out_destroy_mu:
    pthread_mutex_destroy(&g->mu);
    return -rc;
}

void pt_gc_destroy(pt_gcommit *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

int pt_gc_run(pt_gcommit *g, pt_gc_fn fn, void *arg)
{
    pthread_mutex_lock(&g->mu);
    /* A run already under way may have begun before our caller's writes: we need the next. */
    uint64_t target = g->started + 1;
    while (g->completed < target) {
        if (!g->running) {
            g->running = true;
            uint64_t gen = ++g->started;
            pthread_mutex_unlock(&g->mu);
            int rc = fn(arg);
            pthread_mutex_lock(&g->mu);
            g->running = false;
            g->completed = gen;
            if (rc) {
                g->err_gen = gen;
                g->err_rc = rc;
            }
            pthread_cond_broadcast(&g->cv);
        } else {
            pthread_cond_wait(&g->cv, &g->mu);
        }
    }
    int rc = g->err_gen >= target ? g->err_rc : 0;
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* ---- volumes ---- */

int pt_vol_open(pt_vol *v, const pt_volspec *spec, const char *role, pt_error *err)
{
    memset(v, 0, sizeof *v);
    v->fd = -1;
    v->role = role;
    if (!spec || !spec->path || !spec->path[0])
        return pt_fail(err, PT_E_INVALID, "no %s volume given", role);
    snprintf(v->path, sizeof v->path, "%s", spec->path);
    if (spec->fd >= 0) {
        v->fd = fcntl(spec->fd, F_DUPFD_CLOEXEC, 0);
        if (v->fd < 0)
            return pt_fail(err, errno, "%s volume %s: cannot use descriptor %d: %s", role,
                           v->path, spec->fd, strerror(errno));
    } else {
        struct stat st;
        if (stat(spec->path, &st) != 0)
            return pt_fail(err, errno == ENOENT ? PT_E_NOT_FOUND : errno,
                           "%s volume %s: %s", role, v->path, strerror(errno));
        /* O_EXCL on a block device refuses one that is mounted or held by another user. */
        int flags = O_RDWR | O_CLOEXEC | (S_ISBLK(st.st_mode) ? O_EXCL : 0);
        if (S_ISDIR(st.st_mode))
            return pt_fail(err, PT_E_INVALID,
                           "%s volume %s is a directory, not a block device or a file", role,
                           v->path);
        v->fd = open(spec->path, flags);
        if (v->fd < 0) {
            int e = errno;
            if (e == EBUSY)
                return pt_fail(err, PT_E_IN_USE,
                               "%s volume %s is in use (mounted or held by another program)",
                               role, v->path);
            return pt_fail(err, e, "%s volume %s: cannot open: %s", role, v->path,
                           strerror(e));
        }
    }
    struct stat st;
    int rc;
    if (fstat(v->fd, &st) != 0) {
        rc = pt_fail(err, errno, "%s volume %s: %s", role, spec->path, strerror(errno));
        goto out_close;
    }
    if (S_ISBLK(st.st_mode)) {
        v->is_blk = true;
        v->dev = st.st_rdev;
        if (ioctl(v->fd, BLKGETSIZE64, &v->size) != 0) {
            rc = pt_fail(err, errno, "%s volume %s: cannot read its size: %s", role, spec->path,
                         strerror(errno));
            goto out_close;
        }
    } else if (S_ISREG(st.st_mode)) {
        v->dev = st.st_dev;
        v->ino = st.st_ino;
        v->size = (uint64_t)st.st_size;
    } else {
        rc = pt_fail(err, PT_E_INVALID, "%s volume %s is neither a block device nor a file",
                     role, spec->path);
        goto out_close;
    }
    rc = pt_gc_init(&v->sync);
    if (rc) {
        rc = pt_fail(err, -rc, "%s volume %s: out of resources", role, spec->path);
        goto out_close;
    }
    return 0;

out_close:
    /* not pt_vol_close: v->sync was never set up */
    (void)close(v->fd);
    v->fd = -1;
    return rc;
}

void pt_vol_close(pt_vol *v)
{
    if (v->fd >= 0) {
        close(v->fd);   /* nothing useful to do on failure: the data was synced before */
        pt_gc_destroy(&v->sync);
    }
    v->fd = -1;
}

bool pt_vol_same(const pt_vol *a, const pt_vol *b)
{
    if (a->fd < 0 || b->fd < 0)
        return false;
    return a->is_blk == b->is_blk && a->dev == b->dev && a->ino == b->ino;
}

int pt_fd_rw(int fd, void *buf, size_t len, uint64_t off, bool write, size_t *done)
{
    uint8_t *p = buf;
    *done = 0;
    while (len) {
        ssize_t n = write ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;   /* the volume shrank under us */
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
        *done += (size_t)n;
    }
    return 0;
}

int pt_vol_pread(pt_vol *v, void *buf, size_t len, uint64_t off)
{
    int inj = pt_vol_injected(v);
    size_t done;
    return inj ? inj : pt_fd_rw(v->fd, buf, len, off, false, &done);
}

int pt_vol_pwrite(pt_vol *v, const void *buf, size_t len, uint64_t off)
{
    int inj = pt_vol_injected(v);
    size_t done;
    return inj ? inj : pt_fd_rw(v->fd, (void *)buf, len, off, true, &done);
}

static int vol_sync_fn(void *arg)
{
    pt_vol *v = arg;
    int inj = pt_vol_injected(v);
    if (inj)
        return inj;
    return fdatasync(v->fd) == 0 ? 0 : -errno;
}

int pt_vol_sync(pt_vol *v)
{
    return pt_gc_run(&v->sync, vol_sync_fn, v);
}

int pt_vol_zero(pt_vol *v, uint64_t off, uint64_t len)
{
    int inj = pt_vol_injected(v);
    if (inj)
        return inj;
    if (len == 0)
        return 0;
    if (!v->is_blk && fallocate(v->fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (v->is_blk) {
        uint64_t range[2] = {off, len};
        if (ioctl(v->fd, BLKZEROOUT, range) == 0)
            return 0;
    }
    /* the file system or device cannot zero a range: write zeros */
    static const uint8_t zeros[65536];
    while (len) {
        size_t n = len < sizeof zeros ? (size_t)len : sizeof zeros;
        int rc = pt_vol_pwrite(v, zeros, n, off);
        if (rc)
            return rc;
        off += n;
        len -= n;
    }
    return 0;
}

int pt_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(cv, &ca);
    (void)pthread_condattr_destroy(&ca);
    return rc;
}
