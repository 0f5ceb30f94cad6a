/* The FUSE server's private structures, shared by fuse.c (the server's lifetime and its
 * exports) and fuse_ops.c (the request handlers). */
#ifndef PTCOPY_FUSE_SERVER_H
#define PTCOPY_FUSE_SERVER_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include "internal.h"
#include "ptcopy_fuse.h"

#define INO_PER_EXPORT 3u   /* directory, master, shadow */
#define FIRST_INO 2u

/* A worker's receive buffer: one transparent huge page when the kernel gives one. The request
 * is read at PT_RECV_PAD so that a WRITE's data (after its 80 header bytes) starts on a page
 * boundary: the kernel then copies whole pages in, and pt_set_write copies whole pages out.
 * What follows PT_RECV_PAD holds the largest request (max_write = PT_IO_MAX, 1 MiB, plus
 * headers) and libfuse's own read size (256 pages + 4 KiB in libfuse 3.14). */
#define PT_RECV_BUF (2u << 20)
#define PT_MAX_WORKERS 256u
#define PT_RECV_HDR 80u   /* sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in) */
#define PT_RECV_PAD (4096u - PT_RECV_HDR)

_Static_assert(PT_RECV_BUF >= 4096u + PT_IO_MAX, "a read's reply must fit after the request");

typedef struct pt_worker {
    struct pt_server *srv;
    pthread_t thr;
    char *mem;             /* PT_RECV_BUF bytes, aligned to PT_RECV_BUF */
} pt_worker;

typedef struct export {
    char name[256];
    pt_set *set;
    uint64_t size;
    int inflight;          /* requests using it; guarded by the server's mu */
    int opens[2];          /* open file handles per side */
    bool removed;
} export;

struct pt_server {
    pt_engine *eng;
    struct fuse_session *se;
    char mountpoint[512];
    pt_worker *workers;    /* nworkers threads, each reading requests into its own buffer */
    unsigned nworkers;
    pthread_key_t worker_key;   /* each worker thread's pt_worker, for handlers to reuse its buffer */
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    export **exports;      /* indexed by slot; slots are never reused, so inodes are unique */
    size_t nslots, cap;
    uid_t uid;             /* the only caller served, and the files' owner: the daemon's euid */
    gid_t gid;
};

static inline fuse_ino_t ino_of(size_t slot, int kind)
{
    return FIRST_INO + slot * INO_PER_EXPORT + (fuse_ino_t)kind;
}

/* Where a READ's reply may be built: the handling worker's buffer past the request (which is
 * parsed by then), page-aligned, PT_IO_MAX bytes; NULL when not on a worker thread. */
static inline char *reply_area(const struct pt_server *srv)
{
    pt_worker *w = pthread_getspecific(srv->worker_key);
    return w ? w->mem + 4096u : NULL;
}

extern const struct fuse_lowlevel_ops pt_fuse_ops;

#endif
