/* The userspace data path: serves sets' masters and shadows as files on one FUSE mount.
 *
 *   <mountpoint>/<name>/master   <mountpoint>/<name>/shadow
 *
 * libfuse3 low-level API, multithreaded, requests up to 1 MiB; the handlers are fuse_ops.c.
 * An export is referenced by every request in flight on it; unexporting waits for those to end,
 * so a set is never closed under a running request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse_server.h"

/* ---- server lifetime ---- */

static void *loop_main(void *arg)
{
    pt_server *srv = arg;
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (!cfg) {
        srv->loop_rc = -ENOMEM;
        return NULL;
    }
    fuse_loop_cfg_set_max_threads(cfg, srv->max_threads);
    srv->loop_rc = fuse_session_loop_mt(srv->se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return NULL;
}

static void free_server(pt_server *srv)
{
    for (size_t i = 0; i < srv->nslots; i++)
        free(srv->exports[i]);
    free(srv->exports);
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
    srv->eng = eng;
    srv->uid = geteuid();
    srv->gid = getegid();
    srv->max_threads = max_threads ? max_threads : 16;
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
    rc = pthread_create(&srv->thr, NULL, loop_main, srv);
    if (rc) {
        rc = pt_fail(err, rc, "cannot start the FUSE server thread");
        goto out_unmount;
    }
    srv->running = true;
    *out = srv;
    return 0;

out_unmount:
    fuse_session_unmount(srv->se);
out_destroy_session:
    fuse_session_destroy(srv->se);
out_destroy_cv:
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
        pthread_join(srv->thr, NULL);
    }
    fuse_session_destroy(srv->se);
    free_server(srv);
    return 0;
}
