/* ptcopy engine: the kernel data path's device-mapper calls (the engine keeps the bitmaps and
 * moves the chunks; device-mapper does the I/O). Same contract as ptcopy_engine.h. */
#ifndef PTCOPY_DM_H
#define PTCOPY_DM_H

#include "ptcopy_engine.h"

/* ---- the kernel data path: device-mapper ------------------------------------------------ */
/* Raw ioctls on /dev/mapper/control (no libdevmapper: no udev cookies to manage, nothing
 * variadic, and the group freeze below needs every step in one C call). Tables are text,
 * one target per line: "<start> <length> <target> <args>". Device names are at most 127 bytes. */
typedef struct pt_dm_info {
    int exists;
    int suspended;
    int read_only;
    int live_table;      /* a table is active */
    int inactive_table;  /* a loaded table waits for resume */
    int open_count;
    uint32_t target_count;
    uint32_t major, minor;
    uint32_t event_nr;
    char uuid[129];      /* the device's dm uuid ("" when it has none) */
} pt_dm_info;

enum pt_dm_opkind {
    PT_DM_CREATE = 0,  /* create name (no table yet) */
    PT_DM_LOAD = 1,    /* load table into name's inactive slot (read_only honoured) */
    PT_DM_SUSPEND = 2, /* suspend name, flushing what is queued */
    PT_DM_RESUME = 3,  /* resume name, swapping in a loaded table */
    PT_DM_REMOVE = 4,  /* remove name */
    PT_DM_ZERO = 5     /* write zeros to the first `length` bytes of the block device at path */
};

typedef struct pt_dm_op {
    int kind;           /* enum pt_dm_opkind */
    const char *name;   /* device name, or the path for PT_DM_ZERO */
    const char *table;  /* PT_DM_LOAD */
    int read_only;      /* PT_DM_LOAD */
    uint64_t length;    /* PT_DM_ZERO */
    const char *uuid;   /* PT_DM_CREATE: the new device's dm uuid (NULL or "": none) */
} pt_dm_op;

/* The kernel's device-mapper ioctl version, e.g. 4.47.0. Fails when device-mapper is absent. */
int pt_dm_version(uint32_t *out3, pt_error *err);
/* Targets the kernel has loaded: "name major.minor.patch" lines. */
int pt_dm_targets(char *out, size_t len, pt_error *err);
/* Names of all device-mapper devices, one per line. */
int pt_dm_list(char *out, size_t len, pt_error *err);
/* out->exists = 0 (and return 0) when there is no such device. */
int pt_dm_query(const char *name, pt_dm_info *out, pt_error *err);
/* The name of the device whose dm uuid is uuid, into out; out = "" (and return 0) when no
 * device has it. */
int pt_dm_find_uuid(const char *uuid, char *out, size_t len, pt_error *err);
/* DM_DEV_RENAME: give device name the name new_name (set_uuid = 0), or give it the dm uuid
 * new_name (set_uuid != 0; the kernel takes a uuid only on a device that has none). The
 * device keeps serving: its number, its table and its openers do not change. */
int pt_dm_rename(const char *name, const char *new_name, int set_uuid, pt_error *err);
/* Allocate the first len bytes of the file open at fd (fallocate, mode 0: data already there
 * stays), so writes within them cannot fail for want of space. Never emulated by writing: a
 * file system without fallocate gets an error. */
int pt_dm_reserve(int fd, uint64_t len, pt_error *err);
/* The live table (table != 0) or status lines, "<start> <length> <target> <text>". Never call
 * it on a suspended era device: the kernel blocks until it is resumed. */
int pt_dm_status(const char *name, int table, char *out, size_t len, pt_error *err);
/* Send a target message to the target at sector 0; out receives any reply text. */
int pt_dm_message(const char *name, const char *msg, char *out, size_t len, pt_error *err);
/* Run ops in order as one transaction with memory locked, bounded by timeout_ms. On any failure
 * or timeout, tables loaded by the run are cleared, devices it created are removed and devices
 * it suspended are resumed (last suspended first), so nothing stays frozen or half-built.
 * held_ns receives how long the first suspended device stayed suspended. */
int pt_dm_run(const pt_dm_op *ops, int nops, int timeout_ms, uint64_t *held_ns, pt_error *err);
/* After a crash inside a transaction: for every device whose name starts with prefix, clear a
 * table loaded but never resumed, and resume a suspended device that has a live table (it comes
 * back with that table, as a rollback would leave it). out receives "<name> <what>\n" lines
 * (what = cleared, resumed, or cleared+resumed). Devices without a live table are left alone
 * (the caller removes or rebuilds them). Safe to call when nothing is left over. */
int pt_dm_recover(const char *prefix, char *out, size_t len, pt_error *err);

#endif
