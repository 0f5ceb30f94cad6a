/* device-mapper through raw ioctls on /dev/mapper/control: the kernel data path's only door.
 * This file: the control-node plumbing and the queries (version, targets, devices, info,
 * status, messages). Transactions and their recovery are dm_run.c.
 *
 * Every call opens the control node itself and closes it again, so there is no global state. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "dmctl.h"

static const char *op_word(unsigned long cmd)
{
    switch (cmd) {
    case DM_VERSION: return "version";
    case DM_LIST_VERSIONS: return "list targets";
    case DM_LIST_DEVICES: return "list devices";
    case DM_DEV_CREATE: return "create";
    case DM_DEV_REMOVE: return "remove";
    case DM_DEV_RENAME: return "rename";
    case DM_DEV_SUSPEND: return "suspend/resume";
    case DM_DEV_STATUS: return "info";
    case DM_TABLE_LOAD: return "load table";
    case DM_TABLE_CLEAR: return "clear table";
    case DM_TABLE_STATUS: return "status";
    case DM_TARGET_MSG: return "message";
    default: return "ioctl";
    }
}

int pt_dmc_open(pt_error *err)
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

int pt_dmc_name_ok(const char *name, pt_error *err)
{
    if (!name || !name[0] || strlen(name) >= DM_NAME_LEN || strchr(name, '/'))
        return pt_fail(err, PT_E_INVALID, "invalid device-mapper name '%s' (1..%d bytes, no '/')",
                       name ? name : "", DM_NAME_LEN - 1);
    return 0;
}

int pt_dmc_buf_init(dmbuf *b, size_t size, const char *name, uint32_t flags, pt_error *err)
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

int pt_dmc_call(int fd, unsigned long cmd, dmbuf *b, bool may_grow, pt_error *err)
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

int pt_dmc_resume(int fd, const char *name, pt_error *err)
{
    dmbuf b = {0};
    int rc = pt_dmc_buf_init(&b, sizeof(struct dm_ioctl), name, 0, err);
    if (rc)
        return rc;
    rc = pt_dmc_call(fd, DM_DEV_SUSPEND, &b, false, err);
    free(b.io);
    return rc;
}

/* One request on a fresh control descriptor; the caller frees b->io, whatever happened. */
static int simple(unsigned long cmd, const char *name, uint32_t flags, size_t size, dmbuf *b,
                  pt_error *err)
{
    int rc = name ? pt_dmc_name_ok(name, err) : 0;
    if (rc)
        return rc;
    int fd = pt_dmc_open(err);
    if (fd < 0)
        return fd;
    rc = pt_dmc_buf_init(b, size, name, flags, err);
    if (rc)
        goto out_close;
    rc = pt_dmc_call(fd, cmd, b, true, err);
out_close:
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
    if (rc)
        goto out_free;
    for (int i = 0; i < 3; i++)
        out3[i] = b.io->version[i];
out_free:
    free(b.io);
    return rc;
}

int pt_dm_targets(char *out, size_t len, pt_error *err)
{
    dmbuf b = {0};
    int rc = simple(DM_LIST_VERSIONS, NULL, 0, DM_BUF_START, &b, err);
    if (rc)
        goto out_free;
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
out_free:
    free(b.io);
    return rc;
}

int pt_dm_list(char *out, size_t len, pt_error *err)
{
    dmbuf b = {0};
    int rc = simple(DM_LIST_DEVICES, NULL, 0, DM_BUF_START, &b, err);
    if (rc)
        goto out_free;
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
out_free:
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
        rc = 0;
        goto out_free;
    }
    if (rc) {
        rc = pt_fail(err, mine.code, "%s", mine.msg);
        goto out_free;
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
    snprintf(out->uuid, sizeof out->uuid, "%s", b.io->uuid);
out_free:
    free(b.io);
    return rc;
}

int pt_dm_status(const char *name, int table, char *out, size_t len, pt_error *err)
{
    dmbuf b = {0};
    int rc = simple(DM_TABLE_STATUS, name, table ? DM_STATUS_TABLE_FLAG : 0, DM_BUF_START, &b,
                    err);
    if (rc)
        goto out_free;
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
out_free:
    free(b.io);
    return rc;
}

int pt_dm_message(const char *name, const char *msg, char *out, size_t len, pt_error *err)
{
    int rc = pt_dmc_name_ok(name, err);
    if (rc)
        return rc;
    size_t mlen = strlen(msg);
    if (!mlen || mlen > 4096)
        return pt_fail(err, PT_E_INVALID, "invalid message for %s", name);
    int fd = pt_dmc_open(err);
    if (fd < 0)
        return fd;
    dmbuf b = {0};
    size_t size = sizeof(struct dm_ioctl) + sizeof(struct dm_target_msg) + mlen + 1;
    if (size < DM_BUF_START)
        size = DM_BUF_START;
    rc = pt_dmc_buf_init(&b, size, name, 0, err);
    if (rc)
        goto out_close;
    struct dm_target_msg *tm = pt_dmc_payload(&b);
    tm->sector = 0;
    memcpy(tm->message, msg, mlen + 1);
    rc = pt_dmc_call(fd, DM_TARGET_MSG, &b, false, err);
    if (rc || !out || !len)
        goto out_free;
    out[0] = 0;
    if (b.io->flags & DM_DATA_OUT_FLAG)
        rc = copy_out(out, len, (char *)b.io + b.io->data_start, err);
out_free:
    free(b.io);
out_close:
    (void)close(fd);
    return rc;
}

static int uuid_ok(const char *uuid, pt_error *err)
{
    if (!uuid || !uuid[0] || strlen(uuid) >= DM_UUID_LEN)
        return pt_fail(err, PT_E_INVALID, "invalid device-mapper uuid '%s' (1..%d bytes)",
                       uuid ? uuid : "", DM_UUID_LEN - 1);
    return 0;
}

int pt_dm_find_uuid(const char *uuid, char *out, size_t len, pt_error *err)
{
    if (!out || !len)
        return pt_fail(err, PT_E_INVALID, "no buffer for the device name");
    out[0] = 0;
    int rc = uuid_ok(uuid, err);
    if (rc)
        return rc;
    int fd = pt_dmc_open(err);
    if (fd < 0)
        return fd;
    dmbuf b = {0};
    rc = pt_dmc_buf_init(&b, sizeof(struct dm_ioctl), NULL, 0, err);
    if (rc)
        goto out_close;
    /* the kernel looks a device up by uuid when the request names none */
    snprintf(b.io->uuid, sizeof b.io->uuid, "%s", uuid);
    pt_error mine = {0};
    rc = pt_dmc_call(fd, DM_DEV_STATUS, &b, false, &mine);
    if (rc == -PT_E_NOT_FOUND) {
        rc = 0;   /* no device has it: an answer */
        goto out_free;
    }
    if (rc) {
        rc = pt_fail(err, mine.code, "looking up device-mapper uuid %s: %s", uuid, mine.msg);
        goto out_free;
    }
    rc = copy_out(out, len, b.io->name, err);
out_free:
    free(b.io);
out_close:
    (void)close(fd);   /* control node: nothing to lose on close */
    return rc;
}

int pt_dm_rename(const char *name, const char *new_name, int set_uuid, pt_error *err)
{
    int rc = pt_dmc_name_ok(name, err);
    if (rc)
        return rc;
    rc = set_uuid ? uuid_ok(new_name, err) : pt_dmc_name_ok(new_name, err);
    if (rc)
        return rc;
    int fd = pt_dmc_open(err);
    if (fd < 0)
        return fd;
    dmbuf b = {0};
    size_t size = sizeof(struct dm_ioctl) + DM_UUID_LEN + 8;
    rc = pt_dmc_buf_init(&b, size, name, set_uuid ? DM_UUID_FLAG : 0, err);
    if (rc)
        goto out_close;
    /* the new name (or uuid) is the payload, NUL-terminated within data_size */
    snprintf(pt_dmc_payload(&b), DM_UUID_LEN, "%s", new_name);
    pt_error mine = {0};
    rc = pt_dmc_call(fd, DM_DEV_RENAME, &b, false, &mine);
    if (rc == -PT_E_IN_USE && !set_uuid)
        rc = pt_fail(err, PT_E_ALREADY, "cannot rename device-mapper device %s to %s: a device "
                     "of that name exists", name, new_name);
    else if (rc && set_uuid && mine.code == EINVAL)   /* it has a uuid already */
        rc = pt_fail(err, PT_E_INVALID, "cannot give device-mapper device %s the uuid %s: %s",
                     name, new_name, mine.msg);
    else if (rc)
        rc = pt_fail(err, mine.code, "%s", mine.msg);
    free(b.io);
out_close:
    (void)close(fd);   /* control node: nothing to lose on close */
    return rc;
}

int pt_dm_reserve(int fd, uint64_t len, pt_error *err)
{
    if (fd < 0 || len == 0 || len > (uint64_t)INT64_MAX)
        return pt_fail(err, PT_E_INVALID, "nothing to reserve (descriptor %d, %llu bytes)", fd,
                       (unsigned long long)len);
    /* fallocate itself, not posix_fallocate: its fallback writes zero bytes into holes, which
     * could overwrite data a loop device writes into the file at the same time */
    if (fallocate(fd, 0, 0, (off_t)len) != 0) {
        int e = errno;
        if (e == ENOSPC)
            return pt_fail(err, PT_E_OUT_OF_SPACE, "no room to reserve %llu bytes",
                           (unsigned long long)len);
        if (e == EOPNOTSUPP)
            return pt_fail(err, PT_E_INVALID, "the file system cannot reserve space "
                           "(no fallocate)");
        return pt_fail(err, e, "reserving %llu bytes: %s", (unsigned long long)len,
                       strerror(e));
    }
    return 0;
}
