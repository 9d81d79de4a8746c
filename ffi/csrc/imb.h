/*
 * AES-GCM on intel-ipsec-mb's direct API (no DPDK device): the key schedule
 * of one SA direction, and in-place seal/open that hand the computed tag
 * back to the caller. The tag is never compared here: ironsa compares it in
 * constant time (intel-ipsec-mb's PMDs use memcmp).
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
 * Encrypts `data` (len bytes) in place with the 12-byte `iv` and `aad`
 * (aad_len bytes) and writes the 16-byte tag into `tag`.
 */
void ironsa_imb_gcm_seal(const struct ironsa_imb_gcm *gcm, const uint8_t *iv, const uint8_t *aad, uint64_t aad_len,
                         uint8_t *data, uint64_t len, uint8_t *tag);
/*
 * Decrypts `data` in place and writes the tag computed over the ciphertext
 * into `tag` (16 bytes); the caller compares it with the received one.
 */
void ironsa_imb_gcm_open(const struct ironsa_imb_gcm *gcm, const uint8_t *iv, const uint8_t *aad, uint64_t aad_len,
                         uint8_t *data, uint64_t len, uint8_t *tag);

#endif
