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
    pthread_t thr;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    export **exports;      /* indexed by slot; slots are never reused, so inodes are unique */
    size_t nslots, cap;
    unsigned max_threads;
    int loop_rc;
    uid_t uid;             /* the only caller served, and the files' owner: the daemon's euid */
    gid_t gid;
};

static inline fuse_ino_t ino_of(size_t slot, int kind)
{
    return FIRST_INO + slot * INO_PER_EXPORT + (fuse_ino_t)kind;
}

extern const struct fuse_lowlevel_ops pt_fuse_ops;

#endif
