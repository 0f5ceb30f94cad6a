/* ptcopy engine: the userspace data path's FUSE server, which serves sets as files.
 * Same contract as ptcopy_engine.h (codes, pt_error, thread safety). */
#ifndef PTCOPY_FUSE_H
#define PTCOPY_FUSE_H

#include "ptcopy_engine.h"

/* ---- the userspace data path: a FUSE server ------------------------------------------------ */
typedef struct pt_server pt_server;
/* Mount a FUSE file system at mountpoint and serve it from engine threads. */
int pt_server_start(pt_engine *eng, const char *mountpoint, unsigned max_threads,
                    pt_server **out, pt_error *err);
/* Serve set as <mountpoint>/<name>/master and .../shadow. */
int pt_server_export(pt_server *srv, const char *name, pt_set *set, pt_error *err);
/* Stop serving name; refused while its files are open unless force. Waits for requests in
 * flight, so the set may be closed once this returns. */
int pt_server_unexport(pt_server *srv, const char *name, int force, pt_error *err);
/* Serve name's set as new_name from now on: same inodes, so open files and loop devices over
 * them keep working; only the directory's name changes. */
int pt_server_rename(pt_server *srv, const char *name, const char *new_name, pt_error *err);
/* Drop whatever the kernel caches of name's files (after a copy changed them). */
int pt_server_invalidate(pt_server *srv, const char *name, pt_error *err);
/* Unmount and stop; exports must be gone (their sets are not touched). */
int pt_server_stop(pt_server *srv, pt_error *err);

#endif
