/*
 * AES-GCM on intel-ipsec-mb's direct API (no DPDK device): the key schedule
 * of one SA direction, and the intel-ipsec-mb functions that seal and open
 * with it, which the caller invokes itself (in place, the computed tag handed
 * back). The tag is never compared here: ironsa compares it in constant time
 * (intel-ipsec-mb's PMDs use memcmp).
 */
#ifndef IRONSA_IMB_H
#define IRONSA_IMB_H

#include <stdint.h>

/* Opaque: expanded AES keys and GHASH keys of one key (64-byte aligned). */
struct ironsa_imb_gcm;

/*
 * Expands a 16- or 32-byte AES-GCM key. NULL with errno EINVAL (other key
 * lengths), ENOMEM, or ENOTSUP (intel-ipsec-mb could not initialise).
 */
struct ironsa_imb_gcm *ironsa_imb_gcm_new(const uint8_t *key, uint32_t key_len);
/* Wipes the key schedule (imb_clear_mem) and frees it; NULL is ignored. */
void ironsa_imb_gcm_free(struct ironsa_imb_gcm *gcm);
/*
 * intel-ipsec-mb's one-shot AES-GCM function (aes_gcm_enc_dec_t, with the
 * key data and context as untyped pointers): key data, context (written by
 * the call, contents on entry irrelevant), out, in, len, iv (12 bytes), aad,
 * aad_len, tag, tag_len.
 */
typedef void (*ironsa_imb_gcm_fn)(const void *key, void *ctx, uint8_t *out, const uint8_t *in, uint64_t len,
                                  const uint8_t *iv, const uint8_t *aad, uint64_t aad_len, uint8_t *tag,
                                  uint64_t tag_len);

/*
 * What a caller needs to call intel-ipsec-mb's AES-GCM directly (the
 * functions resolved once per key, not per packet): the key data (inside `gcm`, valid while it is),
 * the encrypt and decrypt functions of its key size, and the size and
 * alignment of the context they take.
 */
struct ironsa_imb_gcm_direct {
    const void *key;
    ironsa_imb_gcm_fn enc;
    ironsa_imb_gcm_fn dec;
    uint32_t ctx_size;
    uint32_t ctx_align;
};

/* Fills `out` for `gcm` (both non-NULL). */
void ironsa_imb_gcm_direct(const struct ironsa_imb_gcm *gcm, struct ironsa_imb_gcm_direct *out);

#endif
