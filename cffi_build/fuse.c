/* The userspace data path: serves sets' masters and shadows as files on one FUSE mount.
 *
 *   <mountpoint>/<name>/master   <mountpoint>/<name>/shadow
 *
 * libfuse3 low-level API, a fixed pool of worker threads, requests up to 1 MiB; the handlers
 * are fuse_ops.c.
 * An export is referenced by every request in flight on it; unexporting waits for those to end,
 * so a set is never closed under a running request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse_server.h"

/* ---- server lifetime ---- */

/* One worker: reads a request into its own buffer and handles it, until the session ends.
 * libfuse's own multithreaded loop is not used because it picks its buffers: here every buffer
 * is one huge page with a WRITE's data landing page-aligned.
 *
 * A lazy unmount leaves the connection alive while a loop device still holds a file, so
 * stopping cannot count on every blocked reader waking: as libfuse's loop does, a worker can
 * be cancelled only while it waits for a request, never while it handles one (the engine's
 * locks and writes are not cancellation safe). */
static void *worker_main(void *arg)
{
    pt_worker *w = arg;
    struct fuse_session *se = w->srv->se;
    struct fuse_buf fbuf;
    memset(&fbuf, 0, sizeof fbuf);
    fbuf.mem = w->mem + PT_RECV_PAD;
    if (pthread_setspecific(w->srv->worker_key, w) != 0)
        return NULL;   /* cannot happen: the key exists; handlers would lack their buffer */
    while (!fuse_session_exited(se)) {
        int res;
        if (pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL) != 0)
            break;
        res = fuse_session_receive_buf(se, &fbuf);
        if (pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL) != 0)
            break;
        if (res == -EINTR || res == -EAGAIN)
            continue;
        if (res <= 0)
            break;   /* 0: unmounted or exited; < 0: the device failed (libfuse logged it) */
        fuse_session_process_buf(se, &fbuf);
    }
    return NULL;
}

/* A receive buffer of PT_RECV_BUF bytes, in one transparent huge page where the kernel has
 * them (fewer pages for the kernel to pin per request, fewer TLB misses in both copies). */
static char *recv_buffer(void)
{
    void *p = NULL;
    if (posix_memalign(&p, PT_RECV_BUF, PT_RECV_BUF) != 0)
        return NULL;
    if (madvise(p, PT_RECV_BUF, MADV_HUGEPAGE) != 0) {
        /* no THP in this kernel (EINVAL): the buffer works with small pages as well */
    }
    return p;
}

/* Starts nworkers threads with every signal blocked (signals are the application's, as with
 * libfuse's own loop); returns how many started. */
static unsigned start_workers(pt_server *srv, unsigned n, int *rc)
{
    sigset_t all, old;
    sigfillset(&all);
    *rc = pthread_sigmask(SIG_BLOCK, &all, &old);
    if (*rc)
        return 0;
    unsigned i;
    for (i = 0; i < n; i++) {
        pt_worker *w = &srv->workers[i];
        w->srv = srv;
        w->mem = recv_buffer();
        if (!w->mem) {
            *rc = ENOMEM;
            break;
        }
        *rc = pthread_create(&w->thr, NULL, worker_main, w);
        if (*rc) {
            free(w->mem);
            w->mem = NULL;
            break;
        }
    }
    int mrc = pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!*rc && mrc)
        *rc = mrc;
    return i;
}

/* Ends the first n workers once the session is exited and unmounted: a worker still waiting
 * for a request is cancelled there; one handling a request finishes it first. */
static void join_workers(pt_server *srv, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (pthread_cancel(srv->workers[i].thr) != 0) {
            /* ESRCH: it ended already (the join below reaps it) */
        }
    for (unsigned i = 0; i < n; i++) {
        pthread_join(srv->workers[i].thr, NULL);
        free(srv->workers[i].mem);
        srv->workers[i].mem = NULL;
    }
}

static void free_server(pt_server *srv)
{
    for (size_t i = 0; i < srv->nslots; i++)
        free(srv->exports[i]);
    free(srv->exports);
    free(srv->workers);
    pthread_key_delete(srv->worker_key);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}

int pt_server_start(pt_engine *eng, const char *mountpoint, unsigned max_threads,
                    pt_server **out, pt_error *err)
{
    if (!mountpoint || !mountpoint[0])
        return pt_fail(err, PT_E_INVALID, "no mount point given");
    struct stat st;
    if (stat(mountpoint, &st) != 0 || !S_ISDIR(st.st_mode))
        return pt_fail(err, PT_E_NOT_FOUND, "mount point %s is not a directory", mountpoint);
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        return pt_fail(err, errno == ENOENT ? PT_E_NOT_FOUND : errno,
                       "/dev/fuse is not usable (%s): load the fuse module or run as root",
                       strerror(errno));
    if (max_threads > PT_MAX_WORKERS)
        return pt_fail(err, PT_E_INVALID, "%u server threads asked for; at most %u",
                       max_threads, PT_MAX_WORKERS);
    pt_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return pt_fail(err, ENOMEM, "out of memory");
    int rc;
    if (pthread_mutex_init(&srv->mu, NULL) != 0) {
        rc = pt_fail(err, EAGAIN, "out of resources");
        goto out_free;
    }
    if (pthread_cond_init(&srv->cv, NULL) != 0) {
        rc = pt_fail(err, EAGAIN, "out of resources");
        goto out_destroy_mu;
    }
    if (pthread_key_create(&srv->worker_key, NULL) != 0) {
        pthread_cond_destroy(&srv->cv);
        rc = pt_fail(err, EAGAIN, "out of resources");
        goto out_destroy_mu;
    }
    srv->eng = eng;
    srv->uid = geteuid();
    srv->gid = getegid();
    srv->nworkers = max_threads ? max_threads : 16;
    srv->workers = calloc(srv->nworkers, sizeof *srv->workers);
    if (!srv->workers) {
        rc = pt_fail(err, ENOMEM, "out of memory");
        goto out_destroy_cv;
    }
    snprintf(srv->mountpoint, sizeof srv->mountpoint, "%s", mountpoint);
    char *argv[] = {"ptcopy", "-o", "fsname=ptcopy,subtype=ptcopy,allow_other,default_permissions,max_read=1048576",
                    NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    srv->se = fuse_session_new(&args, &pt_fuse_ops, sizeof pt_fuse_ops, srv);
    if (!srv->se) {
        rc = pt_fail(err, EIO, "cannot create a FUSE session for %s", mountpoint);
        goto out_destroy_cv;
    }
    if (fuse_session_mount(srv->se, srv->mountpoint) != 0) {
        rc = pt_fail(err, EIO, "cannot mount the FUSE file system at %s (is it mounted "
                     "already, and is this root?)", mountpoint);
        goto out_destroy_session;
    }
    unsigned started = start_workers(srv, srv->nworkers, &rc);
    if (rc) {
        fuse_session_exit(srv->se);
        fuse_session_unmount(srv->se);   /* wakes the workers that started */
        join_workers(srv, started);
        rc = pt_fail(err, rc, "cannot start the FUSE server's threads");
        goto out_destroy_session;
    }
    srv->running = true;
    *out = srv;
    return 0;

out_destroy_session:
    fuse_session_destroy(srv->se);
out_destroy_cv:
    free(srv->workers);
    pthread_key_delete(srv->worker_key);
    pthread_cond_destroy(&srv->cv);
out_destroy_mu:
    pthread_mutex_destroy(&srv->mu);
out_free:
    free(srv);
    return rc;
}

static int find_slot(pt_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->nslots; i++)
        if (srv->exports[i] && !srv->exports[i]->removed && !strcmp(srv->exports[i]->name, name))
            return (int)i;
    return -1;
}

int pt_server_export(pt_server *srv, const char *name, pt_set *set, pt_error *err)
{
    if (!name || !name[0] || strlen(name) >= sizeof(((export *)0)->name) || strchr(name, '/') ||
        !strcmp(name, ".") || !strcmp(name, ".."))
        return pt_fail(err, PT_E_INVALID, "export name '%s' is not a valid file name",
                       name ? name : "");
    export *e = calloc(1, sizeof *e);
    if (!e)
        return pt_fail(err, ENOMEM, "out of memory");
    snprintf(e->name, sizeof e->name, "%s", name);
    e->set = set;
    e->size = set->master_size;
    pthread_mutex_lock(&srv->mu);
    int rc = 0;
    if (find_slot(srv, name) >= 0) {
        rc = pt_fail(err, PT_E_ALREADY, "%s/%s is already served", srv->mountpoint, name);
    } else if (srv->nslots == srv->cap) {
        size_t cap = srv->cap ? srv->cap * 2 : 16;
        export **n = realloc(srv->exports, cap * sizeof *n);
        if (!n)
            rc = pt_fail(err, ENOMEM, "out of memory");
        else {
            srv->exports = n;
            srv->cap = cap;
        }
    }
    if (!rc)
        srv->exports[srv->nslots++] = e;
    pthread_mutex_unlock(&srv->mu);
    if (rc)
        free(e);
    return rc;
}

int pt_server_unexport(pt_server *srv, const char *name, int force, pt_error *err)
{
    pthread_mutex_lock(&srv->mu);
    int slot = find_slot(srv, name);
    if (slot < 0) {
        pthread_mutex_unlock(&srv->mu);
        return pt_fail(err, PT_E_NOT_FOUND, "%s/%s is not served", srv->mountpoint, name);
    }
    export *e = srv->exports[slot];
    /* A loop device detached just before lets go of its file asynchronously: give such
     * releases a moment before calling the files busy. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    while (!force && (e->opens[0] || e->opens[1]) &&
           pthread_cond_timedwait(&srv->cv, &srv->mu, &dl) == 0)
        ;
    if (!force && (e->opens[0] || e->opens[1])) {
        pthread_mutex_unlock(&srv->mu);
        return pt_fail(err, PT_E_IN_USE, "%s/%s is open (%d master, %d shadow handles)",
                       srv->mountpoint, name, e->opens[0], e->opens[1]);
    }
    e->removed = true;   /* new requests find nothing; wait for the ones in flight */
    while (e->inflight)
        pthread_cond_wait(&srv->cv, &srv->mu);
    e->set = NULL;
    pthread_mutex_unlock(&srv->mu);
    /* the kernel may still hold the names: drop them */
    fuse_lowlevel_notify_inval_entry(srv->se, FUSE_ROOT_ID, name, strlen(name));
    return 0;
}

/* The export keeps its slot, so its inodes: open files and loop devices over them go on being
 * served; only the directory's name changes. */
int pt_server_rename(pt_server *srv, const char *name, const char *new_name, pt_error *err)
{
    if (!new_name || !new_name[0] || strlen(new_name) >= sizeof(((export *)0)->name) ||
        strchr(new_name, '/') || !strcmp(new_name, ".") || !strcmp(new_name, ".."))
        return pt_fail(err, PT_E_INVALID, "export name '%s' is not a valid file name",
                       new_name ? new_name : "");
    pthread_mutex_lock(&srv->mu);
    int slot = find_slot(srv, name);
    int rc = 0;
    if (slot < 0)
        rc = pt_fail(err, PT_E_NOT_FOUND, "%s/%s is not served", srv->mountpoint, name);
    else if (find_slot(srv, new_name) >= 0)
        rc = pt_fail(err, PT_E_ALREADY, "%s/%s is already served", srv->mountpoint, new_name);
    else
        snprintf(srv->exports[slot]->name, sizeof srv->exports[slot]->name, "%s", new_name);
    pthread_mutex_unlock(&srv->mu);
    if (!rc)   /* the kernel may still hold the old name (and a negative entry for the new) */
        for (int k = 0; k < 2; k++) {
            const char *n = k ? new_name : name;
            (void)fuse_lowlevel_notify_inval_entry(srv->se, FUSE_ROOT_ID, n, strlen(n));
        }
    return rc;
}

int pt_server_invalidate(pt_server *srv, const char *name, pt_error *err)
{
    pthread_mutex_lock(&srv->mu);
    int slot = find_slot(srv, name);
    pthread_mutex_unlock(&srv->mu);
    if (slot < 0)
        return pt_fail(err, PT_E_NOT_FOUND, "%s/%s is not served", srv->mountpoint, name);
    for (int k = 1; k <= 2; k++) {
        int rc = fuse_lowlevel_notify_inval_inode(srv->se, ino_of((size_t)slot, k), 0, 0);
        if (rc && rc != -ENOENT)   /* ENOENT: the kernel holds nothing of it */
            return pt_fail(err, -rc, "cannot invalidate %s/%s: %s", srv->mountpoint, name,
                           strerror(-rc));
    }
    return 0;
}

int pt_server_stop(pt_server *srv, pt_error *err)
{
    (void)err;
    if (srv->running) {
        fuse_session_exit(srv->se);
        /* unmounting ends the connection, which wakes the threads blocked reading it */
        fuse_session_unmount(srv->se);
        join_workers(srv, srv->nworkers);
    }
    fuse_session_destroy(srv->se);
    free_server(srv);
    return 0;
}
