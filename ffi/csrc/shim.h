/*
 * ironsa C shim: DPDK's static inline fast-path functions and union-heavy
 * structures, re-exported as plain functions and flat structs under `ironsa_*`
 * names so Rust can call them. Every function is a thin forwarder.
 */
#ifndef IRONSA_DPDK_SHIM_H
#define IRONSA_DPDK_SHIM_H

#include <stddef.h>
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;
struct rte_crypto_op;

/* Flags (RTE_BIT64 macros that bindgen cannot evaluate). */
extern const uint64_t ironsa_rss_ip;
extern const uint64_t ironsa_rss_udp;
extern const uint64_t ironsa_rss_tcp;
extern const uint64_t ironsa_rx_offload_security;
extern const uint64_t ironsa_tx_offload_security;
extern const uint64_t ironsa_rx_offload_rss_hash;
extern const uint64_t ironsa_rx_offload_checksum;
extern const uint64_t ironsa_tx_offload_ipv4_cksum;
extern const uint64_t ironsa_tx_offload_multi_segs;
extern const uint64_t ironsa_mbuf_f_rx_rss_hash;
extern const uint64_t ironsa_mbuf_f_rx_sec_offload;

/* Errors and lcores. */
int ironsa_rte_errno(void);
void ironsa_set_rte_errno(int value);
unsigned ironsa_lcore_id(void);

/* ethdev fast path. */
uint16_t ironsa_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t ironsa_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

/* mbuf. */
struct rte_mbuf *ironsa_pktmbuf_alloc(struct rte_mempool *mp);
int ironsa_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void ironsa_pktmbuf_free(struct rte_mbuf *m);
void ironsa_pktmbuf_reset(struct rte_mbuf *m);
uint8_t *ironsa_pktmbuf_mtod(const struct rte_mbuf *m);
uint16_t ironsa_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t ironsa_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t ironsa_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint16_t ironsa_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t ironsa_pktmbuf_tailroom(const struct rte_mbuf *m);
uint8_t *ironsa_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
uint8_t *ironsa_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint8_t *ironsa_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int ironsa_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint64_t ironsa_pktmbuf_ol_flags(const struct rte_mbuf *m);
void ironsa_pktmbuf_set_ol_flags(struct rte_mbuf *m, uint64_t flags);
uint16_t ironsa_pktmbuf_port(const struct rte_mbuf *m);
uint32_t ironsa_pktmbuf_rss_hash(const struct rte_mbuf *m);
struct rte_mempool *ironsa_pktmbuf_pool(const struct rte_mbuf *m);
unsigned ironsa_mempool_size(const struct rte_mempool *mp);

/* ring (of pointers). */
unsigned ironsa_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned ironsa_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned ironsa_ring_count(const struct rte_ring *r);
unsigned ironsa_ring_capacity(const struct rte_ring *r);

/* cryptodev. */
uint16_t ironsa_cryptodev_enqueue_burst(uint8_t dev, uint16_t qp, struct rte_crypto_op **ops, uint16_t n);
uint16_t ironsa_cryptodev_dequeue_burst(uint8_t dev, uint16_t qp, struct rte_crypto_op **ops, uint16_t n);
struct rte_crypto_op *ironsa_crypto_sym_op_alloc(struct rte_mempool *mp);
void ironsa_crypto_op_free(struct rte_crypto_op *op);
int ironsa_crypto_op_status(const struct rte_crypto_op *op);
struct rte_mbuf *ironsa_crypto_op_m_src(const struct rte_crypto_op *op);
void ironsa_crypto_op_set_m_src(struct rte_crypto_op *op, struct rte_mbuf *m);
/* Offset of the per-op private area (IV, AAD) from the start of the op. */
uint16_t ironsa_crypto_op_priv_offset(void);
uint8_t *ironsa_crypto_op_priv(struct rte_crypto_op *op);
uint16_t ironsa_crypto_op_priv_size(const struct rte_crypto_op *op);
/*
 * Fill the symmetric AEAD part of `op`: session, source mbuf, data region,
 * digest placed in the mbuf at `digest_off`, AAD placed in the op private area
 * at `aad_priv_off`. Returns 0 or -EINVAL.
 */
int ironsa_crypto_op_set_aead(struct rte_crypto_op *op, void *session, struct rte_mbuf *m,
                              uint32_t data_off, uint32_t data_len, uint32_t digest_off,
                              uint16_t aad_priv_off);

/* Flattened AEAD capability. */
struct ironsa_range {
    uint16_t min;
    uint16_t max;
    uint16_t increment;
};
struct ironsa_aead_caps {
    struct ironsa_range key_size;
    struct ironsa_range digest_size;
    struct ironsa_range aad_size;
    struct ironsa_range iv_size;
};
/* 0 when the device supports AES-GCM (caps filled), -ENOTSUP otherwise. */
int ironsa_cryptodev_aes_gcm_caps(uint8_t dev, struct ironsa_aead_caps *out);
/* Create an AES-GCM session; returns NULL and sets rte_errno on failure. */
void *ironsa_cryptodev_aes_gcm_session(uint8_t dev, struct rte_mempool *pool, int encrypt,
                                        const uint8_t *key, uint16_t key_len, uint16_t iv_offset,
                                        uint16_t iv_len, uint16_t digest_len, uint16_t aad_len);

/*
 * Synchronous CPU crypto (rte_cryptodev_sym_cpu_crypto_process) of one AEAD
 * operation in place: `data` (len bytes) is encrypted or decrypted with the
 * session's direction; `iv`, `aad` and `digest` have the session's lengths.
 * Returns 0 on success, a positive errno from the PMD (EBADMSG: the ICV did
 * not verify), or -ENOTSUP when the device has no CPU crypto.
 */
int ironsa_cpu_aead(uint8_t dev, void *session, uint8_t *data, uint32_t len, uint8_t *iv,
                    uint8_t *aad, uint8_t *digest);
/*
 * The same for `n` (<= 64) operations of one session in one call: op i works
 * on data[i] (len[i] bytes) with iv[i], aad[i], digest[i]; status[i] gets 0 or
 * a positive errno. Returns the number of operations that succeeded.
 */
unsigned ironsa_cpu_aead_bulk(uint8_t dev, void *session, unsigned n, uint8_t *const *data, const uint32_t *len,
                              uint8_t *const *iv, uint8_t *const *aad, uint8_t *const *digest, int32_t *status);
/* 1 when the device advertises RTE_CRYPTODEV_FF_SYM_CPU_CRYPTO. */
int ironsa_cryptodev_has_cpu_crypto(uint8_t dev);

/* Flattened rte_security capability. */
struct ironsa_sec_cap {
    int action;
    int protocol;
    int ipsec_proto;
    int ipsec_mode;
    int ipsec_direction;
    uint32_t replay_win_sz_max;
};
/* Copy up to `max` capabilities of `ctx`; returns how many the context has. */
int ironsa_security_caps(void *ctx, struct ironsa_sec_cap *out, int max);

/* mbuf offload flags of inline IPsec. */
extern const uint64_t ironsa_mbuf_f_rx_sec_offload_failed;
extern const uint64_t ironsa_mbuf_f_tx_sec_offload;

/*
 * An ESP SA for an rte_security INLINE_CRYPTO session with AES-GCM (the NIC
 * encrypts/decrypts; software builds ESP). Addresses are in network order
 * (IPv4 in the first 4 bytes); the key is borrowed for the call.
 */
struct ironsa_ipsec_sa {
    uint32_t spi;
    uint8_t salt[4];
    int egress;
    int tunnel;
    int ipv6;
    uint8_t src[16];
    uint8_t dst[16];
    int esn;
    uint64_t esn_initial;
    int udp_encap;
    uint16_t sport;
    uint16_t dport;
    uint32_t replay_win_sz;
    const uint8_t *key;
    uint16_t key_len;
    uint16_t iv_len;
    uint16_t digest_len;
    uint16_t aad_len;
};

/* The DPDK session configuration built from an SA, read back field by field (tests). */
struct ironsa_ipsec_conf_view {
    int action;
    int protocol;
    uint32_t spi;
    uint8_t salt[4];
    int direction;
    int proto;
    int mode;
    int esn;
    uint64_t esn_value;
    int udp_encap;
    uint16_t sport;
    uint16_t dport;
    uint32_t replay_win_sz;
    int tunnel_type;
    uint8_t src[16];
    uint8_t dst[16];
    uint8_t ttl;
    int xform_type;
    int aead_algo;
    int aead_op;
    uint16_t key_len;
    uint16_t iv_len;
    uint16_t digest_len;
    uint16_t aad_len;
};
int ironsa_security_ipsec_conf_view(const struct ironsa_ipsec_sa *sa, struct ironsa_ipsec_conf_view *out);
/* 1 when `ctx` has an inline-crypto ESP capability (mode, direction, options, AES-GCM sizes) for `sa`. */
int ironsa_security_ipsec_supported(void *ctx, const struct ironsa_ipsec_sa *sa);
/* A mempool of `n` sessions for `ctx`; NULL (rte_errno set) on failure. */
struct rte_mempool *ironsa_security_session_pool(const char *name, void *ctx, unsigned n);
/* rte_security_session_create for `sa`; NULL (rte_errno set) on failure. */
void *ironsa_security_ipsec_session_create(void *ctx, const struct ironsa_ipsec_sa *sa, struct rte_mempool *mp);
int ironsa_security_session_destroy(void *ctx, void *sess);
/* Marks `m` for inline encryption by `sess` (ol_flags, l2/l3 lengths, metadata). */
int ironsa_security_tx_prepare(void *ctx, void *sess, struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len,
                               int ipv6);

/*
 * rte_flow rules that hand an inline SA's ESP to its session (steering by
 * the tunnel addresses, the UDP port with NAT-T, and the SPI). Ingress rules
 * carry SECURITY then a fate: 0 = QUEUE(queue), 1 = PASSTHRU, 2 = none; egress
 * rules carry SECURITY only. Flows are `void *` (struct rte_flow is opaque).
 */
#define IRONSA_FLOW_MAX_ITEMS 6
#define IRONSA_FLOW_MAX_ACTIONS 4
/* The rule as built, read back field by field (tests and diagnostics). */
struct ironsa_flow_view {
    int ingress;
    int egress;
    int n_items;
    int item_types[IRONSA_FLOW_MAX_ITEMS];
    int ipv6;
    uint8_t src[16];
    uint8_t dst[16];
    uint8_t src_mask[16];
    uint8_t dst_mask[16];
    int udp;
    uint16_t udp_dst;
    uint16_t udp_dst_mask;
    uint32_t spi;
    uint32_t spi_mask;
    int n_actions;
    int action_types[IRONSA_FLOW_MAX_ACTIONS];
    uint16_t queue;
};
int ironsa_security_flow_view(const struct ironsa_ipsec_sa *sa, uint16_t queue, int fate,
                              struct ironsa_flow_view *out);
/*
 * rte_flow_validate (create = 0; returns NULL) or rte_flow_create (create = 1)
 * of the rule for `sa` and session `sess` on `port`. On failure *ret is the
 * negative errno and DPDK's message is copied into msg (NUL-terminated).
 */
void *ironsa_security_flow(uint16_t port, const struct ironsa_ipsec_sa *sa, void *sess, uint16_t queue, int fate,
                           int create, int *ret, char *msg, size_t msg_len);
/* rte_flow_destroy; negative errno and message on failure. */
int ironsa_flow_destroy(uint16_t port, void *flow, char *msg, size_t msg_len);

#endif
