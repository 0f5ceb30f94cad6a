/* The overflow volume's header: its layout, encoding, and the checks a header must pass
 * before the volume is used. */
#include <string.h>

#include "internal.h"

static const char MAGIC[8] = {'P', 'T', 'C', 'O', 'P', 'Y', 'O', 'V'};
#define VERSION 1u

enum {
    O_MAGIC = 0, O_VERSION = 8, O_HDRSIZE = 12, O_UUID = 16, O_CHUNK = 32, O_STATE = 36,
    O_NCHUNKS = 40, O_DATA = 48, O_ALLOC = 56, O_USED = 64, O_NSETS = 72, O_SETS = 128,
    O_CRC = PT_HDR_SIZE - 4
};

void pt_ov_encode(const pt_overflow *ov, uint8_t *h, uint32_t state)
{
    memset(h, 0, PT_HDR_SIZE);
    memcpy(h + O_MAGIC, MAGIC, 8);
    uint32_t v32 = VERSION;
    memcpy(h + O_VERSION, &v32, 4);
    v32 = PT_HDR_SIZE;
    memcpy(h + O_HDRSIZE, &v32, 4);
    memcpy(h + O_UUID, ov->uuid, 16);
    memcpy(h + O_CHUNK, &ov->chunk, 4);
    memcpy(h + O_STATE, &state, 4);
    memcpy(h + O_NCHUNKS, &ov->nchunks, 8);
    memcpy(h + O_DATA, &ov->data_off, 8);
    uint64_t alloc_off = PT_HDR_SIZE;
    memcpy(h + O_ALLOC, &alloc_off, 8);
    memcpy(h + O_USED, &ov->alloc.count, 8);
    uint32_t n = (uint32_t)ov->nsets;
    memcpy(h + O_NSETS, &n, 4);
    memcpy(h + O_SETS, ov->set_uuids, (size_t)ov->nsets * 16);
    uint32_t crc = pt_crc32c(h, O_CRC);
    memcpy(h + O_CRC, &crc, 4);
}

static int bad(const pt_overflow *ov, pt_error *err, const char *why)
{
    return pt_fail(err, PT_E_BAD_HEADER, "overflow volume %s: %s", ov->vol.path, why);
}

int pt_ov_decode(pt_overflow *ov, const uint8_t *h, uint32_t *state, uint32_t *nsets,
                 pt_error *err)
{
    uint32_t v32, crc;
    memcpy(&v32, h + O_VERSION, 4);
    memcpy(&crc, h + O_CRC, 4);
    memcpy(state, h + O_STATE, 4);
    memcpy(nsets, h + O_NSETS, 4);
    memcpy(&ov->chunk, h + O_CHUNK, 4);
    memcpy(&ov->nchunks, h + O_NCHUNKS, 8);
    memcpy(&ov->data_off, h + O_DATA, 8);
    if (memcmp(h, MAGIC, 8) != 0)
        return bad(ov, err, "bad overflow magic: not an initialised overflow volume");
    if (v32 != VERSION)
        return bad(ov, err, "written by an unsupported format version");
    if (crc != pt_crc32c(h, O_CRC))
        return bad(ov, err, "header checksum mismatch (corrupted)");
    if (*state != PT_STATE_CLEAN && *state != PT_STATE_DIRTY)
        return bad(ov, err, "unknown state marker (corrupted)");
    if (*nsets > PT_OV_MAX_SETS || ov->chunk < PT_CHUNK_MIN || ov->chunk > PT_CHUNK_MAX ||
        (ov->chunk & (ov->chunk - 1)) || ov->nchunks == 0 || ov->nchunks >= PT_IDX_OV)
        return bad(ov, err, "header fields out of range (corrupted or truncated)");
    /* nchunks < 2^31 and chunk <= 2^20: the product cannot wrap; the sum is checked as a
     * difference so a huge data offset cannot wrap either */
    if (ov->data_off < PT_HDR_SIZE + pt_round_up((ov->nchunks + 7) / 8, PT_PAGE) ||
        ov->data_off % ov->chunk)
        return bad(ov, err, "data offset overlaps the header or allocation map, or is not a "
                   "multiple of the chunk size (corrupted)");
    if (ov->data_off > ov->vol.size || ov->nchunks * ov->chunk > ov->vol.size - ov->data_off)
        return bad(ov, err, "chunks reach past the end of the volume (corrupted or truncated)");
    memcpy(ov->uuid, h + O_UUID, 16);
    ov->nsets = (int)*nsets;
    memcpy(ov->set_uuids, h + O_SETS, (size_t)*nsets * 16);
    return 0;
}
