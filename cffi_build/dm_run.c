/* device-mapper transactions (pt_dm_run): a plain list of steps undone in reverse on failure,
 * under a watchdog that resumes what the run holds suspended past its deadline; and the
 * recovery after a crash inside one (pt_dm_recover). The control-node plumbing is dm.c. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dmctl.h"

/* ---- tables ---- */

/* Parse "<start> <len> <target> <args>" lines into dm_target_spec entries after the header. */
static int fill_table(dmbuf *b, const char *name, const char *table, pt_error *err)
{
    char *p = pt_dmc_payload(b);
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
    for (uint64_t off = 0; off < length;) {
        size_t n = length - off < sizeof z ? (size_t)(length - off) : sizeof z;
        ssize_t w = pwrite(fd, z, n, (off_t)off);
        if (w <= 0) {
            rc = pt_fail(err, w < 0 ? errno : EIO, "initialising %s: %s", path,
                         strerror(w < 0 ? errno : EIO));
            goto out_close;
        }
        off += (uint64_t)w;
    }
    if (fdatasync(fd) != 0) {
        rc = pt_fail(err, errno, "syncing %s: %s", path, strerror(errno));
        goto out_close;
    }
    /* the block device's cache must not hand back what was there before */
    if (ioctl(fd, BLKFLSBUF, 0) != 0 && errno != ENOTTY)
        rc = pt_fail(err, errno, "flushing %s's buffers: %s", path, strerror(errno));
out_close:
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
                    (void)pt_dmc_resume(fd, w->ops[i].name, &ignored);
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

/* The kernel's log, positioned at its end, for kernel_reason; -1 when unreadable. */
static int open_kmsg(void)
{
    int kfd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (kfd >= 0 && lseek(kfd, 0, SEEK_END) < 0) {
        (void)close(kfd);
        kfd = -1;
    }
    return kfd;
}

static int run_op(int fd, const pt_dm_op *op, pt_error *err)
{
    if (op->kind == PT_DM_ZERO)
        return zero_device(op->name, op->length, err);
    int rc = pt_dmc_name_ok(op->name, err);
    if (rc)
        return rc;
    dmbuf b = {0};
    size_t size = sizeof(struct dm_ioctl);
    if (op->kind == PT_DM_LOAD)
        size += strlen(op->table ? op->table : "") * 2 + 4096;
    rc = pt_dmc_buf_init(&b, size, op->name, 0, err);
    if (rc)
        return rc;
    unsigned long cmd = 0;
    switch (op->kind) {
    case PT_DM_CREATE:
        cmd = DM_DEV_CREATE;
        if (op->uuid && op->uuid[0]) {
            if (strlen(op->uuid) >= DM_UUID_LEN)
                rc = pt_fail(err, PT_E_INVALID, "%s: device-mapper uuid '%s' too long", op->name,
                             op->uuid);
            else
                snprintf(b.io->uuid, sizeof b.io->uuid, "%s", op->uuid);
        }
        break;
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
    if (rc)
        goto out_free;
    int kfd = op->kind == PT_DM_LOAD ? open_kmsg() : -1;
    pt_error mine = {0};
    rc = pt_dmc_call(fd, cmd, &b, false, &mine);
    if (rc && op->kind == PT_DM_LOAD && mine.code != PT_E_IN_USE) {
        char why[256];
        kernel_reason(kfd, why, sizeof why);
        rc = pt_fail(err, PT_E_INVALID, "the kernel refused the table for %s (%s): %.200s",
                     op->name, why[0] ? why : mine.msg, op->table);
    } else if (rc) {
        rc = pt_fail(err, mine.code, "%s", mine.msg);
    }
    if (kfd >= 0)
        (void)close(kfd);   /* read-only */
out_free:
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
        if (pt_dmc_buf_init(&b, sizeof(struct dm_ioctl), ops[i].name, 0, &ignored))
            continue;
        if (ops[i].kind == PT_DM_LOAD)
            (void)pt_dmc_call(fd, DM_TABLE_CLEAR, &b, false, &ignored);
        else if (ops[i].kind == PT_DM_CREATE)
            (void)pt_dmc_call(fd, DM_DEV_REMOVE, &b, false, &ignored);
        else if (ops[i].kind == PT_DM_SUSPEND && suspended[i])
            (void)pt_dmc_call(fd, DM_DEV_SUSPEND, &b, false, &ignored);
        free(b.io);
    }
}

static int timed_out(int timeout_ms, pt_error *err)
{
    return pt_fail(err, PT_E_TIMEOUT, "device-mapper transaction took longer than %d ms; "
                   "everything it suspended was resumed", timeout_ms);
}

/* Runs the steps in order until one fails or the watchdog fires. *done: the steps that took
 * effect (what a rollback undoes); *first_suspend: when the first suspend took effect. */
static int run_steps(int fd, watchdog *w, bool *suspended, int timeout_ms, int *done,
                     uint64_t *first_suspend, pt_error *err)
{
    const pt_dm_op *ops = w->ops;
    for (int i = 0; i < w->nops; i++) {
        if (atomic_load(&w->fired))
            return timed_out(timeout_ms, err);
        if (pthread_mutex_lock(&w->mu) != 0)
            return pt_fail(err, EDEADLK, "transaction lock failed");
        /* mark before the call so a watchdog firing mid-suspend resumes this device too */
        if (ops[i].kind == PT_DM_SUSPEND)
            suspended[i] = true;
        (void)pthread_mutex_unlock(&w->mu);
        int rc = run_op(fd, &ops[i], err);
        if (pthread_mutex_lock(&w->mu) == 0) {
            if (rc && ops[i].kind == PT_DM_SUSPEND)
                suspended[i] = false;
            if (!rc && ops[i].kind == PT_DM_RESUME)
                for (int k = 0; k < i; k++)
                    if (suspended[k] && !strcmp(ops[k].name, ops[i].name))
                        suspended[k] = false;
            (void)pthread_mutex_unlock(&w->mu);
        }
        if (rc)
            return rc;
        *done = i + 1;
        if (ops[i].kind == PT_DM_SUSPEND && !*first_suspend)
            *first_suspend = pt_now_ns();
    }
    return 0;
}

static void watch_stop(watchdog *w, pthread_t thr)
{
    if (pthread_mutex_lock(&w->mu) == 0) {
        w->done = true;
        (void)pthread_cond_signal(&w->cv);
        (void)pthread_mutex_unlock(&w->mu);
    }
    (void)pthread_join(thr, NULL);
}

int pt_dm_run(const pt_dm_op *ops, int nops, int timeout_ms, uint64_t *held_ns, pt_error *err)
{
    if (held_ns)
        *held_ns = 0;
    if (nops <= 0 || nops > 4096 || timeout_ms <= 0)
        return pt_fail(err, PT_E_INVALID, "device-mapper transaction: %d steps, timeout %d ms",
                       nops, timeout_ms);
    int fd = pt_dmc_open(err);
    if (fd < 0)
        return fd;
    int rc;
    bool *suspended = calloc((size_t)nops, sizeof *suspended);
    if (!suspended) {
        rc = pt_fail(err, ENOMEM, "out of memory for a device-mapper transaction");
        goto out_close;
    }
    /* see "Memory during a transaction" above: the watchdog's stack is ours, touched here */
    char *wstack = NULL;
    if (posix_memalign((void **)&wstack, 4096, WATCH_STACK) != 0) {
        rc = pt_fail(err, ENOMEM, "out of memory for the transaction's watchdog");
        goto out_free_suspended;
    }
    for (size_t i = 0; i < WATCH_STACK; i += 4096)
        wstack[i] = 0;
    watchdog w = {.ops = ops, .suspended = suspended, .nops = nops,
                  .deadline_ns = pt_wall_ns() + (uint64_t)timeout_ms * 1000000ull};
    if (pthread_mutex_init(&w.mu, NULL) != 0) {
        rc = pt_fail(err, ENOMEM, "cannot set up the transaction's watchdog");
        goto out_free_stack;
    }
    if (pthread_cond_init(&w.cv, NULL) != 0) {
        rc = pt_fail(err, ENOMEM, "cannot set up the transaction's watchdog");
        goto out_destroy_mu;
    }
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) {
        rc = pt_fail(err, EAGAIN, "cannot set up the transaction's watchdog");
        goto out_destroy_cv;
    }
    if (pthread_attr_setstack(&attr, wstack, WATCH_STACK) != 0) {
        rc = pt_fail(err, EAGAIN, "cannot set up the transaction's watchdog");
        goto out_destroy_attr;
    }
    warm_stack();
    mem_lock();
    pthread_t thr;
    if (pthread_create(&thr, &attr, watch, &w) != 0) {
        rc = pt_fail(err, EAGAIN, "cannot start the transaction's watchdog");
        goto out_mem_unlock;
    }
    uint64_t first_suspend = 0;
    int done = 0;
    rc = run_steps(fd, &w, suspended, timeout_ms, &done, &first_suspend, err);
    watch_stop(&w, thr);
    /* after the join: a watchdog that fired at any time resumed devices the run needed */
    if (!rc && atomic_load(&w.fired))
        rc = timed_out(timeout_ms, err);
    if (rc)
        rollback(fd, ops, done, suspended);
    if (first_suspend && held_ns)
        *held_ns = pt_now_ns() - first_suspend;
out_mem_unlock:
    mem_unlock();
out_destroy_attr:
    (void)pthread_attr_destroy(&attr);
out_destroy_cv:
    (void)pthread_cond_destroy(&w.cv);
out_destroy_mu:
    (void)pthread_mutex_destroy(&w.mu);
out_free_stack:
    free(wstack);   /* the watchdog was joined: nothing runs on it any more */
out_free_suspended:
    free(suspended);
out_close:
    (void)close(fd);
    return rc;
}

/* ---- recovery after a crash inside a transaction ---- */

/* Clears the table a dead transaction left loaded and resumes a device it left suspended;
 * appends "<name> <what>" to out at *used. */
static int recover_one(int fd, const char *name, const pt_dm_info *info, char *out, size_t len,
                       size_t *used, pt_error *err)
{
    bool cleared = false, resumed = false;
    int rc;
    /* A table loaded but never resumed belongs to a transaction that died: resuming would swap
     * it in half-built. Clear it, as the transaction's rollback would have. */
    if (info->inactive_table) {
        dmbuf b = {0};
        rc = pt_dmc_buf_init(&b, sizeof(struct dm_ioctl), name, 0, err);
        if (!rc)
            rc = pt_dmc_call(fd, DM_TABLE_CLEAR, &b, false, err);
        free(b.io);
        if (rc)
            return rc;
        cleared = true;
    }
    if (info->suspended && info->live_table) {
        rc = pt_dmc_resume(fd, name, err);
        if (rc)
            return rc;
        resumed = true;
    }
    if (!cleared && !resumed)
        return 0;
    int n = snprintf(out + *used, len - *used, "%s %s\n", name,
                     cleared && resumed ? "cleared+resumed" : cleared ? "cleared" : "resumed");
    if (n < 0 || (size_t)n >= len - *used)
        return pt_fail(err, E2BIG, "output buffer too small for the recovered devices");
    *used += (size_t)n;
    return 0;
}

int pt_dm_recover(const char *prefix, char *out, size_t len, pt_error *err)
{
    if (!prefix || !out || len == 0)
        return pt_fail(err, PT_E_INVALID, "device-mapper recovery needs a prefix and a buffer");
    out[0] = 0;
    size_t plen = strlen(prefix), used = 0;
    char *names = malloc(1u << 20);
    if (!names)
        return pt_fail(err, ENOMEM, "out of memory for the device-mapper device list");
    int rc = pt_dm_list(names, 1u << 20, err);
    if (rc)
        goto out_free;
    int fd = pt_dmc_open(err);
    if (fd < 0) {
        rc = fd;
        goto out_free;
    }
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
        if (!rc && info.exists)
            rc = recover_one(fd, line, &info, out, len, &used, err);
    }
    (void)close(fd);   /* control node: nothing to lose on close */
out_free:
    free(names);
    return rc;
}
