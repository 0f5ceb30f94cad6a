/* device-mapper through raw ioctls on /dev/mapper/control: the kernel data path's only door.
 *
 * Every call opens the control node itself and closes it again, so there is no global state;
 * a transaction (pt_dm_run) is a plain list of steps undone in reverse on failure. */
#include <errno.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define DM_CONTROL "/dev/mapper/control"
#define DM_BUF_START 16384u
#define DM_BUF_MAX (16u << 20)

static const char *op_word(unsigned long cmd)
{
    switch (cmd) {
    case DM_VERSION: return "version";
    case DM_LIST_VERSIONS: return "list targets";
    case DM_LIST_DEVICES: return "list devices";
    case DM_DEV_CREATE: return "create";
    case DM_DEV_REMOVE: return "remove";
    case DM_DEV_SUSPEND: return "suspend/resume";
    case DM_DEV_STATUS: return "info";
    case DM_TABLE_LOAD: return "load table";
    case DM_TABLE_CLEAR: return "clear table";
    case DM_TABLE_STATUS: return "status";
    case DM_TARGET_MSG: return "message";
    default: return "ioctl";
    }
}

static int open_control(pt_error *err)
{
    int fd = open(DM_CONTROL, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return pt_fail(err, PT_E_NOT_FOUND,
                           "device-mapper is not available: %s is missing "
                           "(modprobe dm-mod, or use the userspace data path)", DM_CONTROL);
        return pt_fail(err, e, "cannot open %s: %s", DM_CONTROL, strerror(e));
    }
    return fd;
}

static int name_ok(const char *name, pt_error *err)
{
    if (!name || !name[0] || strlen(name) >= DM_NAME_LEN || strchr(name, '/'))
        return pt_fail(err, PT_E_INVALID, "invalid device-mapper name '%s' (1..%d bytes, no '/')",
                       name ? name : "", DM_NAME_LEN - 1);
    return 0;
}

/* A dm_ioctl buffer: header, then payload. */
typedef struct dmbuf {
    struct dm_ioctl *io;
    size_t size;
} dmbuf;

static int buf_init(dmbuf *b, size_t size, const char *name, uint32_t flags, pt_error *err)
{
    b->io = calloc(1, size);
    if (!b->io)
        return pt_fail(err, ENOMEM, "out of memory for a device-mapper request");
    b->size = size;
    b->io->version[0] = DM_VERSION_MAJOR;
    b->io->version[1] = 0;
    b->io->version[2] = 0;
    b->io->data_size = (uint32_t)size;
    b->io->data_start = sizeof(struct dm_ioctl);
    b->io->flags = flags;
    if (name)
        snprintf(b->io->name, sizeof b->io->name, "%s", name);
    return 0;
}

static void *payload(dmbuf *b) { return (char *)b->io + sizeof(struct dm_ioctl); }

/* Issue cmd; grow the buffer and retry while the kernel says it was too small (only for
 * requests without input payload). */
static int dm_call(int fd, unsigned long cmd, dmbuf *b, bool may_grow, pt_error *err)
{
    for (;;) {
        if (ioctl(fd, cmd, b->io) != 0) {
            int e = errno;
            const char *nm = b->io->name[0] ? b->io->name : "device-mapper";
            if (e == ENXIO)
                return pt_fail(err, PT_E_NOT_FOUND, "%s: no such device-mapper device (%s)", nm,
                               op_word(cmd));
            if (e == EBUSY)
                return pt_fail(err, PT_E_IN_USE, "%s is busy (%s): it is open or has devices "
                               "stacked on it", nm, op_word(cmd));
            if (e == EEXIST)
                return pt_fail(err, PT_E_ALREADY, "%s already exists", nm);
            return pt_fail(err, e, "%s: %s failed: %s", nm, op_word(cmd), strerror(e));
        }
        if (!(b->io->flags & DM_BUFFER_FULL_FLAG))
            return 0;
        if (!may_grow || b->size >= DM_BUF_MAX)
            return pt_fail(err, E2BIG, "device-mapper reply too large");
        size_t nsize = b->size * 4;
        struct dm_ioctl *n = calloc(1, nsize);
        if (!n)
            return pt_fail(err, ENOMEM, "out of memory for a device-mapper reply");
        memcpy(n, b->io, sizeof *n);
        n->data_size = (uint32_t)nsize;
        n->flags &= ~(uint32_t)DM_BUFFER_FULL_FLAG;
        free(b->io);
        b->io = n;
        b->size = nsize;
    }
}

/* One request on a fresh control descriptor. */
static int simple(unsigned long cmd, const char *name, uint32_t flags, size_t size, dmbuf *b,
                  pt_error *err)
{
    int rc = name ? name_ok(name, err) : 0;
    if (rc)
        return rc;
    int fd = open_control(err);
    if (fd < 0)
        return fd;
    rc = buf_init(b, size, name, flags, err);
    if (!rc)
        rc = dm_call(fd, cmd, b, true, err);
    (void)close(fd);  /* read-only use of the control node: nothing to lose on close */
    return rc;
}

static int copy_out(char *out, size_t len, const char *text, pt_error *err)
{
    size_t n = strlen(text);
    if (n + 1 > len)
        return pt_fail(err, E2BIG, "output buffer of %zu bytes too small (%zu needed)", len, n + 1);
    memcpy(out, text, n + 1);
    return 0;
}

int pt_dm_version(uint32_t *out3, pt_error *err)
{
    dmbuf b = {0};
    int rc = simple(DM_VERSION, NULL, 0, sizeof(struct dm_ioctl), &b, err);
    if (!rc)
        for (int i = 0; i < 3; i++)
            out3[i] = b.io->version[i];
    free(b.io);
    return rc;
}

int pt_dm_targets(char *out, size_t len, pt_error *err)
{
    dmbuf b = {0};
    int rc = simple(DM_LIST_VERSIONS, NULL, 0, DM_BUF_START, &b, err);
    if (rc) {
        free(b.io);
        return rc;
    }
    size_t used = 0;
    out[0] = 0;
    char *base = (char *)b.io + b.io->data_start;
    char *end = (char *)b.io + b.io->data_size;
    struct dm_target_versions *tv = (struct dm_target_versions *)base;
    while ((char *)tv + sizeof *tv <= end) {
        int n = snprintf(out + used, len - used, "%s %u.%u.%u\n", tv->name, tv->version[0],
                         tv->version[1], tv->version[2]);
        if (n < 0 || (size_t)n >= len - used) {
            rc = pt_fail(err, E2BIG, "output buffer too small for the target list");
            break;
        }
        used += (size_t)n;
        if (!tv->next)
            break;
        tv = (struct dm_target_versions *)((char *)tv + tv->next);
    }
    free(b.io);
    return rc;
}

int pt_dm_list(char *out, size_t len, pt_error *err)
{
    dmbuf b = {0};
    int rc = simple(DM_LIST_DEVICES, NULL, 0, DM_BUF_START, &b, err);
    if (rc) {
        free(b.io);
        return rc;
    }
    size_t used = 0;
    out[0] = 0;
    char *end = (char *)b.io + b.io->data_size;
    struct dm_name_list *nl = (struct dm_name_list *)((char *)b.io + b.io->data_start);
    /* an empty list is a single entry with dev == 0 */
    while (nl->dev && (char *)nl + sizeof *nl <= end) {
        int n = snprintf(out + used, len - used, "%s\n", nl->name);
        if (n < 0 || (size_t)n >= len - used) {
            rc = pt_fail(err, E2BIG, "output buffer too small for the device list");
            break;
        }
        used += (size_t)n;
        if (!nl->next)
            break;
        nl = (struct dm_name_list *)((char *)nl + nl->next);
    }
    free(b.io);
    return rc;
}

int pt_dm_query(const char *name, pt_dm_info *out, pt_error *err)
{
    memset(out, 0, sizeof *out);
    dmbuf b = {0};
    pt_error mine = {0};
    int rc = simple(DM_DEV_STATUS, name, 0, sizeof(struct dm_ioctl), &b, &mine);
    /* "no such device" is an answer; no device-mapper at all is an error */
    if (rc == -PT_E_NOT_FOUND && access(DM_CONTROL, F_OK) == 0) {
        free(b.io);
        return 0;
    }
    if (rc) {
        free(b.io);
        return pt_fail(err, mine.code, "%s", mine.msg);
    }
    uint32_t f = b.io->flags;
    out->exists = 1;
    out->suspended = !!(f & DM_SUSPEND_FLAG);
    out->read_only = !!(f & DM_READONLY_FLAG);
    out->live_table = !!(f & DM_ACTIVE_PRESENT_FLAG);
    out->inactive_table = !!(f & DM_INACTIVE_PRESENT_FLAG);
    out->open_count = b.io->open_count;
    out->target_count = b.io->target_count;
    out->major = (uint32_t)((b.io->dev >> 8) & 0xfff) | (uint32_t)((b.io->dev >> 32) & ~0xfffu);
    out->minor = (uint32_t)(b.io->dev & 0xff) | (uint32_t)((b.io->dev >> 12) & ~0xffu);
    out->event_nr = b.io->event_nr;
    free(b.io);
    return 0;
}

int pt_dm_status(const char *name, int table, char *out, size_t len, pt_error *err)
{
    dmbuf b = {0};
    int rc = simple(DM_TABLE_STATUS, name, table ? DM_STATUS_TABLE_FLAG : 0, DM_BUF_START, &b,
                    err);
    if (rc) {
        free(b.io);
        return rc;
    }
    size_t used = 0;
    out[0] = 0;
    char *p = (char *)b.io + b.io->data_start;
    for (uint32_t i = 0; i < b.io->target_count; i++) {
        struct dm_target_spec *sp = (struct dm_target_spec *)p;
        const char *text = (const char *)(sp + 1);
        int n = snprintf(out + used, len - used, "%llu %llu %.16s %s\n",
                         (unsigned long long)sp->sector_start, (unsigned long long)sp->length,
                         sp->target_type, text);
        if (n < 0 || (size_t)n >= len - used) {
            rc = pt_fail(err, E2BIG, "output buffer too small for %s's status", name);
            break;
        }
        used += (size_t)n;
        /* in replies, next is the offset from the start of the data area */
        p = (char *)b.io + b.io->data_start + sp->next;
    }
    free(b.io);
    return rc;
}

int pt_dm_message(const char *name, const char *msg, char *out, size_t len, pt_error *err)
{
    int rc = name_ok(name, err);
    if (rc)
        return rc;
    size_t mlen = strlen(msg);
    if (!mlen || mlen > 4096)
        return pt_fail(err, PT_E_INVALID, "invalid message for %s", name);
    int fd = open_control(err);
    if (fd < 0)
        return fd;
    dmbuf b = {0};
    size_t size = sizeof(struct dm_ioctl) + sizeof(struct dm_target_msg) + mlen + 1;
    if (size < DM_BUF_START)
        size = DM_BUF_START;
    rc = buf_init(&b, size, name, 0, err);
    if (!rc) {
        struct dm_target_msg *tm = payload(&b);
        tm->sector = 0;
        memcpy(tm->message, msg, mlen + 1);
        rc = dm_call(fd, DM_TARGET_MSG, &b, false, err);
    }
    if (!rc && out && len) {
        out[0] = 0;
        if (b.io->flags & DM_DATA_OUT_FLAG)
            rc = copy_out(out, len, (char *)b.io + b.io->data_start, err);
    }
    free(b.io);
    (void)close(fd);
    return rc;
}

/* ---- tables ---- */

/* Parse "<start> <len> <target> <args>" lines into dm_target_spec entries after the header. */
static int fill_table(dmbuf *b, const char *name, const char *table, pt_error *err)
{
    char *p = payload(b);
    char *end = (char *)b->io + b->size;
    uint32_t count = 0;
    const char *line = table;
    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        if (ll == 0) {
            line += nl ? 1 : 0;
            if (!nl)
                break;
            continue;
        }
        char tmp[4096];
        if (ll >= sizeof tmp)
            return pt_fail(err, PT_E_INVALID, "%s: table line too long", name);
        memcpy(tmp, line, ll);
        tmp[ll] = 0;
        unsigned long long start, length;
        char target[DM_MAX_TYPE_NAME];
        int argpos = 0;
        if (sscanf(tmp, "%llu %llu %15s %n", &start, &length, target, &argpos) < 3 || !length)
            return pt_fail(err, PT_E_INVALID, "%s: malformed table line '%s' "
                           "(want '<start> <length> <target> <args>')", name, tmp);
        const char *args = tmp + argpos;
        size_t alen = strlen(args) + 1;
        size_t step = (sizeof(struct dm_target_spec) + alen + 7) & ~(size_t)7;
        if (p + step > end)
            return pt_fail(err, E2BIG, "%s: table too large", name);
        struct dm_target_spec *sp = (struct dm_target_spec *)p;
        memset(sp, 0, sizeof *sp);
        sp->sector_start = start;
        sp->length = length;
        snprintf(sp->target_type, sizeof sp->target_type, "%s", target);
        memcpy(sp + 1, args, alen);
        sp->next = (uint32_t)step;  /* in requests, relative to this spec */
        p += step;
        count++;
        line += ll + (nl ? 1 : 0);
    }
    if (!count)
        return pt_fail(err, PT_E_INVALID, "%s: empty table", name);
    b->io->target_count = count;
    return 0;
}

static int zero_device(const char *path, uint64_t length, pt_error *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return pt_fail(err, errno, "cannot open %s to initialise it: %s", path, strerror(errno));
    char z[65536];
    memset(z, 0, sizeof z);
    int rc = 0;
    for (uint64_t off = 0; off < length && !rc;) {
        size_t n = length - off < sizeof z ? (size_t)(length - off) : sizeof z;
        ssize_t w = pwrite(fd, z, n, (off_t)off);
        if (w <= 0)
            rc = pt_fail(err, w < 0 ? errno : EIO, "initialising %s: %s", path,
                         strerror(w < 0 ? errno : EIO));
        else
            off += (uint64_t)w;
    }
    if (!rc && fdatasync(fd) != 0)
        rc = pt_fail(err, errno, "syncing %s: %s", path, strerror(errno));
    /* the block device's cache must not hand back what was there before */
    if (!rc && ioctl(fd, BLKFLSBUF, 0) != 0 && errno != ENOTTY)
        rc = pt_fail(err, errno, "flushing %s's buffers: %s", path, strerror(errno));
    if (close(fd) != 0 && !rc)
        rc = pt_fail(err, errno, "closing %s: %s", path, strerror(errno));
    return rc;
}

/* ---- transactions ---- */

/* Memory during a transaction. A page fault that has to read from a suspended device never
 * finishes, so what the run touches between its first suspend and the last resume must already
 * be resident. mlockall(MCL_CURRENT | MCL_FUTURE) did that by faulting in and pinning the whole
 * process: every sparse bitmap image (calloc'd, mostly never touched) and every thread stack
 * became real memory for the length of the run. Instead:
 *  - MCL_CURRENT | MCL_ONFAULT pins what is resident now (the code and data the run has just
 *    used, this process's resident heap) and keeps it from being paged out, without populating
 *    anything that was never touched; no MCL_FUTURE, so other threads' new mappings are theirs;
 *  - the run warms what it will touch itself before any step: its stack (below), its per-op
 *    buffers (allocated from the heap, which is resident), the watchdog's stack (a small buffer
 *    of ours, touched and so locked);
 *  - memory that was never touched costs no I/O when first touched (anonymous zero pages), so
 *    what is left unlocked cannot block on a suspended device except through swap, and pages
 *    that were resident are pinned away from swap.
 * Concurrent runs share one lock: the last one out unlocks (munlockall is process-wide). */
static pthread_mutex_t lock_mu = PTHREAD_MUTEX_INITIALIZER;
static int lock_users;
static bool lock_held;

static void mem_lock(void)
{
    (void)pthread_mutex_lock(&lock_mu);
    if (lock_users++ == 0)
        lock_held = mlockall(MCL_CURRENT | MCL_ONFAULT) == 0;   /* unprivileged: run unlocked */
    (void)pthread_mutex_unlock(&lock_mu);
}

static void mem_unlock(void)
{
    (void)pthread_mutex_lock(&lock_mu);
    if (--lock_users == 0 && lock_held) {
        (void)munlockall();   /* cannot fail once mlockall succeeded */
        lock_held = false;
    }
    (void)pthread_mutex_unlock(&lock_mu);
}

/* Touch the stack the steps will use (ioctl buffers of the kernel-reason reader, zero_device's
 * 64 KiB, snprintf frames) so those pages are resident, and so locked, before a suspend. */
static __attribute__((noinline)) void warm_stack(void)
{
    volatile char pad[192 * 1024];
    for (size_t i = 0; i < sizeof pad; i += 4096)
        pad[i] = 0;
}

#define WATCH_STACK (256u * 1024u)

typedef struct watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    atomic_int fired;
    uint64_t deadline_ns;
    const pt_dm_op *ops;
    const bool *suspended;  /* per op: this op suspended a device still suspended */
    int nops;
} watchdog;

static int resume_name(int fd, const char *name, pt_error *err)
{
    dmbuf b = {0};
    int rc = buf_init(&b, sizeof(struct dm_ioctl), name, 0, err);
    if (!rc)
        rc = dm_call(fd, DM_DEV_SUSPEND, &b, false, err);
    free(b.io);
    return rc;
}

/* Past the deadline, resume what the run holds suspended: a stuck step must not leave
 * applications frozen. The run itself then fails. */
static void *watch(void *arg)
{
    watchdog *w = arg;
    if (pthread_mutex_lock(&w->mu) != 0)
        return NULL;
    while (!w->done) {
        struct timespec ts = {(time_t)(w->deadline_ns / 1000000000ull),
                              (long)(w->deadline_ns % 1000000000ull)};
        int rc = pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        if (rc == ETIMEDOUT && !w->done) {
            atomic_store(&w->fired, 1);
            int fd = open(DM_CONTROL, O_RDWR | O_CLOEXEC);
            for (int i = w->nops - 1; fd >= 0 && i >= 0; i--) {
                if (w->suspended[i]) {
                    pt_error ignored = {0};  /* best effort: the run reports the timeout */
                    (void)resume_name(fd, w->ops[i].name, &ignored);
                }
            }
            if (fd >= 0)
                (void)close(fd);
            break;
        }
    }
    (void)pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* The kernel explains a refused table only in its log: read what device-mapper logged since
 * `kfd` was positioned at the end. Best effort; an empty reason leaves the generic message. */
static void kernel_reason(int kfd, char *out, size_t len)
{
    out[0] = 0;
    char rec[1024];
    ssize_t n;
    while (kfd >= 0 && (n = read(kfd, rec, sizeof rec - 1)) > 0) {
        rec[n] = 0;
        char *msg = strchr(rec, ';');   /* "prio,seq,ts,flags;message\n" */
        if (!msg || !strstr(msg, "device-mapper"))
            continue;
        msg++;
        msg[strcspn(msg, "\n")] = 0;
        snprintf(out, len, "%s", msg);  /* the last one is the most specific */
    }
}

static int run_op(int fd, const pt_dm_op *op, pt_error *err)
{
    if (op->kind == PT_DM_ZERO)
        return zero_device(op->name, op->length, err);
    int rc = name_ok(op->name, err);
    if (rc)
        return rc;
    dmbuf b = {0};
    size_t size = sizeof(struct dm_ioctl);
    if (op->kind == PT_DM_LOAD)
        size += strlen(op->table ? op->table : "") * 2 + 4096;
    rc = buf_init(&b, size, op->name, 0, err);
    unsigned long cmd = 0;
    if (!rc) {
        switch (op->kind) {
        case PT_DM_CREATE: cmd = DM_DEV_CREATE; break;
        case PT_DM_REMOVE: cmd = DM_DEV_REMOVE; break;
        case PT_DM_SUSPEND: cmd = DM_DEV_SUSPEND; b.io->flags = DM_SUSPEND_FLAG; break;
        case PT_DM_RESUME: cmd = DM_DEV_SUSPEND; break;
        case PT_DM_LOAD:
            cmd = DM_TABLE_LOAD;
            if (op->read_only)
                b.io->flags = DM_READONLY_FLAG;
            rc = fill_table(&b, op->name, op->table ? op->table : "", err);
            break;
        default: rc = pt_fail(err, PT_E_INVALID, "unknown device-mapper step %d", op->kind);
        }
    }
    int kfd = -1;
    if (!rc && op->kind == PT_DM_LOAD) {
        kfd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (kfd >= 0 && lseek(kfd, 0, SEEK_END) < 0) {
            (void)close(kfd);
            kfd = -1;
        }
    }
    if (!rc) {
        pt_error mine = {0};
        rc = dm_call(fd, cmd, &b, false, &mine);
        if (rc && op->kind == PT_DM_LOAD && mine.code != PT_E_IN_USE) {
            char why[256];
            kernel_reason(kfd, why, sizeof why);
            rc = pt_fail(err, PT_E_INVALID, "the kernel refused the table for %s (%s): %.200s",
                         op->name, why[0] ? why : mine.msg, op->table);
        } else if (rc) {
            rc = pt_fail(err, mine.code, "%s", mine.msg);
        }
    }
    if (kfd >= 0)
        (void)close(kfd);   /* read-only */
    free(b.io);
    return rc;
}

/* Undo what ops[0..done) did, in reverse: clear loaded tables, remove created devices, resume
 * suspended ones. Errors here are not reported over the cause of the failure. */
static void rollback(int fd, const pt_dm_op *ops, int done, const bool *suspended)
{
    for (int i = done - 1; i >= 0; i--) {
        pt_error ignored = {0};
        dmbuf b = {0};
        if (buf_init(&b, sizeof(struct dm_ioctl), ops[i].name, 0, &ignored))
            continue;
        if (ops[i].kind == PT_DM_LOAD)
            (void)dm_call(fd, DM_TABLE_CLEAR, &b, false, &ignored);
        else if (ops[i].kind == PT_DM_CREATE)
            (void)dm_call(fd, DM_DEV_REMOVE, &b, false, &ignored);
        else if (ops[i].kind == PT_DM_SUSPEND && suspended[i])
            (void)dm_call(fd, DM_DEV_SUSPEND, &b, false, &ignored);
        free(b.io);
    }
}

int pt_dm_run(const pt_dm_op *ops, int nops, int timeout_ms, uint64_t *held_ns, pt_error *err)
{
    if (held_ns)
        *held_ns = 0;
    if (nops <= 0 || nops > 4096 || timeout_ms <= 0)
        return pt_fail(err, PT_E_INVALID, "device-mapper transaction: %d steps, timeout %d ms",
                       nops, timeout_ms);
    int fd = open_control(err);
    if (fd < 0)
        return fd;
    bool *suspended = calloc((size_t)nops, sizeof *suspended);
    if (!suspended) {
        (void)close(fd);
        return pt_fail(err, ENOMEM, "out of memory for a device-mapper transaction");
    }
    /* see "Memory during a transaction" above */
    char *wstack = NULL;
    if (posix_memalign((void **)&wstack, 4096, WATCH_STACK) != 0)
        wstack = NULL;
    for (size_t i = 0; wstack && i < WATCH_STACK; i += 4096)
        wstack[i] = 0;
    warm_stack();
    mem_lock();
    watchdog w = {.ops = ops, .suspended = suspended, .nops = nops,
                  .deadline_ns = pt_wall_ns() + (uint64_t)timeout_ms * 1000000ull};
    pthread_t thr;
    pthread_attr_t attr;
    bool watching = false, have_attr = false;
    int rc = 0;
    if (!wstack)
        rc = pt_fail(err, ENOMEM, "out of memory for the transaction's watchdog");
    else if (pthread_mutex_init(&w.mu, NULL) != 0 || pthread_cond_init(&w.cv, NULL) != 0)
        rc = pt_fail(err, ENOMEM, "cannot set up the transaction's watchdog");
    else if (!(have_attr = pthread_attr_init(&attr) == 0) ||
             pthread_attr_setstack(&attr, wstack, WATCH_STACK) != 0)
        rc = pt_fail(err, EAGAIN, "cannot set up the transaction's watchdog");
    else if (pthread_create(&thr, &attr, watch, &w) != 0)
        rc = pt_fail(err, EAGAIN, "cannot start the transaction's watchdog");
    else
        watching = true;
    uint64_t first_suspend = 0;
    int done = 0;  /* ops that took effect: what a rollback undoes */
    for (int i = 0; i < nops && !rc; i++) {
        if (atomic_load(&w.fired)) {
            rc = pt_fail(err, PT_E_TIMEOUT, "device-mapper transaction took longer than %d ms; "
                         "everything it suspended was resumed", timeout_ms);
            break;
        }
        if (pthread_mutex_lock(&w.mu) != 0) {
            rc = pt_fail(err, EDEADLK, "transaction lock failed");
            break;
        }
        /* mark before the call so a watchdog firing mid-suspend resumes this device too */
        if (ops[i].kind == PT_DM_SUSPEND)
            suspended[i] = true;
        (void)pthread_mutex_unlock(&w.mu);
        rc = run_op(fd, &ops[i], err);
        if (pthread_mutex_lock(&w.mu) == 0) {
            if (rc && ops[i].kind == PT_DM_SUSPEND)
                suspended[i] = false;
            if (!rc && ops[i].kind == PT_DM_RESUME)
                for (int k = 0; k < i; k++)
                    if (suspended[k] && !strcmp(ops[k].name, ops[i].name))
                        suspended[k] = false;
            (void)pthread_mutex_unlock(&w.mu);
        }
        if (!rc) {
            done = i + 1;
            if (ops[i].kind == PT_DM_SUSPEND && !first_suspend)
                first_suspend = pt_now_ns();
        }
    }
    if (!rc && atomic_load(&w.fired))
        rc = pt_fail(err, PT_E_TIMEOUT, "device-mapper transaction took longer than %d ms; "
                     "everything it suspended was resumed", timeout_ms);
    if (watching) {
        if (pthread_mutex_lock(&w.mu) == 0) {
            w.done = true;
            (void)pthread_cond_signal(&w.cv);
            (void)pthread_mutex_unlock(&w.mu);
        }
        (void)pthread_join(thr, NULL);
    }
    if (rc)
        rollback(fd, ops, done, suspended);
    if (first_suspend && held_ns)
        *held_ns = pt_now_ns() - first_suspend;
    mem_unlock();
    if (have_attr)
        (void)pthread_attr_destroy(&attr);
    free(wstack);   /* the watchdog was joined: nothing runs on it any more */
    (void)pthread_cond_destroy(&w.cv);
    (void)pthread_mutex_destroy(&w.mu);
    free(suspended);
    (void)close(fd);
    return rc;
}

/* ---- recovery after a crash inside a transaction ---- */

int pt_dm_recover(const char *prefix, char *out, size_t len, pt_error *err)
{
    if (!prefix || !out || len == 0)
        return pt_fail(err, PT_E_INVALID, "device-mapper recovery needs a prefix and a buffer");
    out[0] = 0;
    size_t plen = strlen(prefix);
    char *names = malloc(1u << 20);
    if (!names)
        return pt_fail(err, ENOMEM, "out of memory for the device-mapper device list");
    int rc = pt_dm_list(names, 1u << 20, err);
    int fd = rc ? -1 : open_control(err);
    if (fd < 0 && !rc)
        rc = fd;
    size_t used = 0;
    for (char *line = names, *next; !rc && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        else
            next = line + strlen(line);
        if (strncmp(line, prefix, plen) != 0)
            continue;
        pt_dm_info info;
        rc = pt_dm_query(line, &info, err);
        if (rc || !info.exists)
            continue;
        bool cleared = false, resumed = false;
        /* A table loaded but never resumed belongs to a transaction that died: resuming would
         * swap it in half-built. Clear it, as the transaction's rollback would have. */
        if (info.inactive_table) {
            dmbuf b = {0};
            rc = buf_init(&b, sizeof(struct dm_ioctl), line, 0, err);
            if (!rc)
                rc = dm_call(fd, DM_TABLE_CLEAR, &b, false, err);
            free(b.io);
            cleared = !rc;
        }
        if (!rc && info.suspended && info.live_table) {
            rc = resume_name(fd, line, err);
            resumed = !rc;
        }
        if (!rc && (cleared || resumed)) {
            int n = snprintf(out + used, len - used, "%s %s\n", line,
                             cleared && resumed ? "cleared+resumed" : cleared ? "cleared"
                                                                              : "resumed");
            if (n < 0 || (size_t)n >= len - used)
                rc = pt_fail(err, E2BIG, "output buffer too small for the recovered devices");
            else
                used += (size_t)n;
        }
    }
    if (fd >= 0)
        (void)close(fd);   /* control node: nothing to lose on close */
    free(names);
    return rc;
}
