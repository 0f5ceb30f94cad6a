/* The FUSE server's request handlers (fuse.c starts the server and keeps its exports).
 *
 * Every read and write goes straight to pt_set_read/pt_set_write, so all of the engine's rules
 * hold for I/O through the files (and through loop devices attached to them). Files are opened
 * with direct I/O: the kernel keeps no page cache of them, so nothing is cached twice and
 * nothing goes stale when a copy changes a volume underneath.
 *
 * Access: only the daemon's own user (root) reaches a set's data. The mount has
 * default_permissions, so the kernel checks the modes served here (directories 0700, files
 * 0600, owned by the daemon's user) before any request is sent; every handler that acts for a
 * caller also refuses any uid but the daemon's (EACCES), which covers what the kernel's check
 * does not see: a descriptor passed to, or inherited by, another user.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuse_server.h"

/* ---- inode helpers ---- */

static export *get_export(pt_server *srv, fuse_ino_t ino, int *kind)
{
    if (ino < FIRST_INO)
        return NULL;
    size_t slot = (ino - FIRST_INO) / INO_PER_EXPORT;
    *kind = (int)((ino - FIRST_INO) % INO_PER_EXPORT);   /* 0 dir, 1 master, 2 shadow */
    if (slot >= srv->nslots || !srv->exports[slot] || srv->exports[slot]->removed)
        return NULL;
    return srv->exports[slot];
}

/* Takes a reference on the export behind ino (NULL when gone). */
static export *acquire(pt_server *srv, fuse_ino_t ino, int *kind)
{
    pthread_mutex_lock(&srv->mu);
    export *e = get_export(srv, ino, kind);
    if (e)
        e->inflight++;
    pthread_mutex_unlock(&srv->mu);
    return e;
}

static void release(pt_server *srv, export *e)
{
    pthread_mutex_lock(&srv->mu);
    if (--e->inflight == 0)
        pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void fill_attr(const pt_server *srv, struct stat *st, fuse_ino_t ino, int kind,
                      uint64_t size)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_uid = srv->uid;
    st->st_gid = srv->gid;
    if (kind == 0 || ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0700;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0600;
        st->st_nlink = 1;
        st->st_size = (off_t)size;
        st->st_blocks = (blkcnt_t)((size + 511) / 512);
    }
    st->st_blksize = 4096;
}

static int to_errno(int rc)
{
    int code = rc < 0 ? -rc : rc;
    switch (code) {
    case PT_E_OUT_OF_SPACE: return ENOSPC;
    case PT_E_INVALID: return EINVAL;
    case PT_E_OFFLINE: case PT_E_IO: return EIO;
    default: return code < PT_E_INVALID ? code : EIO;
    }
}

/* The second wall behind default_permissions: a request made by any user but the daemon's is
 * refused. Requests the loop driver makes run in its kernel workers, as root. Replies EACCES
 * and returns false when the caller is refused. */
static bool caller_ok(fuse_req_t req, const pt_server *srv)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    if (ctx && ctx->uid == srv->uid)
        return true;
    fuse_reply_err(req, EACCES);
    return false;
}

/* ---- open files ---- */

/* What the server keeps per open file (fi->fh) of a descriptor opened for writing: whether a
 * write came through it since its last flush. Its close (FUSE FLUSH) syncs only then: a close
 * promises the closer's own writes, and a descriptor that only looked (losetup attaching a loop
 * device, a reader) must not wait for a sync behind a running copy. fsync always syncs. */
typedef struct handle {
    atomic_bool wrote;
} handle;

static handle *handle_of(const struct fuse_file_info *fi)
{
    return fi ? (handle *)(uintptr_t)fi->fh : NULL;
}

/* ---- operations ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_write = PT_IO_MAX;
    conn->max_read = PT_IO_MAX;
    conn->max_readahead = PT_IO_MAX;
    /* let a loop device's whole queue reach us: more first writes share one group commit */
    conn->max_background = 64;
    conn->congestion_threshold = 48;
    conn->want &= ~(unsigned)FUSE_CAP_SPLICE_READ;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    pt_server *srv = fuse_req_userdata(req);
    if (!caller_ok(req, srv))
        return;
    struct fuse_entry_param ep;
    memset(&ep, 0, sizeof ep);
    ep.attr_timeout = ep.entry_timeout = 1.0;
    pthread_mutex_lock(&srv->mu);
    int found = 0;
    if (parent == FUSE_ROOT_ID) {
        for (size_t i = 0; i < srv->nslots && !found; i++) {
            export *e = srv->exports[i];
            if (e && !e->removed && strcmp(e->name, name) == 0) {
                ep.ino = ino_of(i, 0);
                fill_attr(srv, &ep.attr, ep.ino, 0, 0);
                found = 1;
            }
        }
    } else {
        int kind;
        export *e = get_export(srv, parent, &kind);
        if (e && kind == 0 && (!strcmp(name, "master") || !strcmp(name, "shadow"))) {
            int k = strcmp(name, "master") == 0 ? 1 : 2;
            ep.ino = parent + (fuse_ino_t)k;
            fill_attr(srv, &ep.attr, ep.ino, k, e->size);
            found = 1;
        }
    }
    pthread_mutex_unlock(&srv->mu);
    if (found)
        fuse_reply_entry(req, &ep);
    else
        fuse_reply_err(req, ENOENT);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    pt_server *srv = fuse_req_userdata(req);
    if (!caller_ok(req, srv))
        return;
    struct stat st;
    if (ino == FUSE_ROOT_ID) {
        fill_attr(srv, &st, ino, 0, 0);
        fuse_reply_attr(req, &st, 1.0);
        return;
    }
    pthread_mutex_lock(&srv->mu);
    int kind;
    export *e = get_export(srv, ino, &kind);
    if (e)
        fill_attr(srv, &st, ino, kind, e->size);
    pthread_mutex_unlock(&srv->mu);
    if (e)
        fuse_reply_attr(req, &st, 1.0);
    else
        fuse_reply_err(req, ENOENT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    pt_server *srv = fuse_req_userdata(req);
    if (!caller_ok(req, srv))
        return;
    int kind;
    pthread_mutex_lock(&srv->mu);
    export *e = get_export(srv, ino, &kind);
    uint64_t size = e ? e->size : 0;
    pthread_mutex_unlock(&srv->mu);
    if (!e && ino != FUSE_ROOT_ID) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    /* a volume's size is fixed: truncation to another size is refused */
    if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != size) {
        fuse_reply_err(req, EPERM);
        return;
    }
    op_getattr(req, ino, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    pt_server *srv = fuse_req_userdata(req);
    if (!caller_ok(req, srv))
        return;
    char *buf = calloc(1, size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    struct stat st;
    memset(&st, 0, sizeof st);
    pthread_mutex_lock(&srv->mu);
    int kind = 0;
    export *dir = ino == FUSE_ROOT_ID ? NULL : get_export(srv, ino, &kind);
    if (ino != FUSE_ROOT_ID && (!dir || kind != 0)) {
        pthread_mutex_unlock(&srv->mu);
        free(buf);
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    /* entry k of the listing has offset k+1 */
    size_t total = ino == FUSE_ROOT_ID ? 2 + srv->nslots : 4;
    for (size_t k = (size_t)off; k < total; k++) {
        const char *name;
        fuse_ino_t eino;
        if (k == 0) {
            name = ".";
            eino = ino;
        } else if (k == 1) {
            name = "..";
            eino = FUSE_ROOT_ID;
        } else if (ino == FUSE_ROOT_ID) {
            export *e = srv->exports[k - 2];
            if (!e || e->removed)
                continue;
            name = e->name;
            eino = ino_of(k - 2, 0);
        } else {
            name = k == 2 ? "master" : "shadow";
            eino = ino + (fuse_ino_t)(k - 1);
        }
        st.st_ino = eino;
        st.st_mode = (k < 2 || ino == FUSE_ROOT_ID) ? S_IFDIR : S_IFREG;
        size_t n = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)(k + 1));
        if (n > size - used)
            break;
        used += n;
    }
    pthread_mutex_unlock(&srv->mu);
    fuse_reply_buf(req, buf, used);
    free(buf);
}

/* One open of ino less. A removed export may still be released: its slot is looked at
 * directly. */
static void forget_open(pt_server *srv, fuse_ino_t ino)
{
    pthread_mutex_lock(&srv->mu);
    size_t slot = ino >= FIRST_INO ? (ino - FIRST_INO) / INO_PER_EXPORT : SIZE_MAX;
    int kind = ino >= FIRST_INO ? (int)((ino - FIRST_INO) % INO_PER_EXPORT) : 0;
    if (slot < srv->nslots && srv->exports[slot] && kind != 0) {
        srv->exports[slot]->opens[kind - 1]--;
        pthread_cond_broadcast(&srv->cv);
    }
    pthread_mutex_unlock(&srv->mu);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    pt_server *srv = fuse_req_userdata(req);
    if (!caller_ok(req, srv))   /* before counting: a refused open never blocks unexporting */
        return;
    int kind;
    pthread_mutex_lock(&srv->mu);
    export *e = get_export(srv, ino, &kind);
    if (e && kind != 0)
        e->opens[kind - 1]++;
    pthread_mutex_unlock(&srv->mu);
    if (!e) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (kind == 0) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    fi->direct_io = 1;       /* no page cache of volumes in the kernel: see the file comment */
    fi->keep_cache = 0;
    fi->fh = 0;
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        handle *h = calloc(1, sizeof *h);
        if (!h) {
            forget_open(srv, ino);
            fuse_reply_err(req, ENOMEM);
            return;
        }
        fi->fh = (uint64_t)(uintptr_t)h;
    }
    if (fuse_reply_open(req, fi) != 0) {   /* the opener is gone: no release will come */
        free(handle_of(fi));
        forget_open(srv, ino);
    }
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    free(handle_of(fi));
    forget_open(fuse_req_userdata(req), ino);
    fuse_reply_err(req, 0);
}

/* Takes a reference on the file behind ino and gives its side; replies the error and returns
 * NULL when ino is gone or a directory. */
static export *acquire_file(fuse_req_t req, fuse_ino_t ino, int *side)
{
    pt_server *srv = fuse_req_userdata(req);
    if (!caller_ok(req, srv))
        return NULL;
    int kind;
    export *e = acquire(srv, ino, &kind);
    if (e && kind != 0) {
        *side = kind == 1 ? PT_MASTER : PT_SHADOW;
        return e;
    }
    if (e)
        release(srv, e);
    fuse_reply_err(req, e ? EISDIR : ENOENT);
    return NULL;
}

/* Ends a read or write: lets go of the export and replies the error, if any; true when the
 * caller still has to send the success reply. */
static bool io_done(fuse_req_t req, export *e, int rc)
{
    release(fuse_req_userdata(req), e);
    if (rc)
        fuse_reply_err(req, to_errno(rc));
    return rc == 0;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    int side;
    export *e = acquire_file(req, ino, &side);
    if (!e)
        return;
    uint64_t o = (uint64_t)off;
    size_t n = o >= e->size ? 0 : (size > e->size - o ? (size_t)(e->size - o) : size);
    /* the worker's own buffer when the read fits (max_read is PT_IO_MAX): no allocation per
     * request, page-aligned and warm */
    char *own = n <= PT_IO_MAX ? reply_area(fuse_req_userdata(req)) : NULL;
    char *buf = own ? own : (n ? malloc(n) : NULL);
    int rc = n && !buf ? -ENOMEM : 0;
    if (!rc && n)
        rc = pt_set_read(e->set, side, o, buf, n, NULL);
    if (io_done(req, e, rc))
        fuse_reply_buf(req, buf, n);
    if (buf != own)
        free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    int side;
    export *e = acquire_file(req, ino, &side);
    if (!e)
        return;
    handle *h = handle_of(fi);
    if (h)   /* before the write: a flush racing with it syncs rather than misses it */
        atomic_store(&h->wrote, true);
    uint64_t o = (uint64_t)off;
    int rc;
    if (o > e->size || size > e->size - o)
        rc = -ENOSPC;   /* a volume does not grow */
    else
        rc = pt_set_write(e->set, side, o, data, size, NULL);
    if (io_done(req, e, rc))
        fuse_reply_write(req, size);
}

/* fsync and close of a served file. The master's flush syncs what the master's durability
 * needs and never fails because the shadow side (shadow, bitmap, overflow) is offline: a file
 * system on the master would abort its journal. See pt_set_sync. */
static int sync_export(fuse_req_t req, fuse_ino_t ino)
{
    pt_server *srv = fuse_req_userdata(req);
    if (!caller_ok(req, srv))
        return EACCES;
    int kind;
    export *e = acquire(srv, ino, &kind);
    if (!e) {
        fuse_reply_err(req, ENOENT);
        return ENOENT;
    }
    int rc = kind == 0 ? 0 : pt_set_sync(e->set, kind == 1 ? PT_MASTER : PT_SHADOW, NULL);
    release(srv, e);
    fuse_reply_err(req, rc ? to_errno(rc) : 0);
    return rc ? to_errno(rc) : 0;
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    (void)fi;
    (void)sync_export(req, ino);   /* replied there */
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    handle *h = handle_of(fi);
    if (!h || !atomic_exchange(&h->wrote, false)) {
        fuse_reply_err(req, 0);   /* nothing written through this descriptor: nothing to sync */
        return;
    }
    if (sync_export(req, ino) != 0)
        atomic_store(&h->wrote, true);   /* not durable: the next flush tries again */
}

const struct fuse_lowlevel_ops pt_fuse_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readdir = op_readdir,
    .open = op_open,
    .release = op_release,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
};
