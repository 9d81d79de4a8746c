/*
 * ironsa C shim: see shim.h. Each function forwards to a DPDK 22.11
 * static inline function or flattens a union-heavy structure.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_cryptodev.h>
#include <rte_crypto.h>
#include <rte_security.h>
#include <rte_flow.h>

#include "shim.h"

const uint64_t ironsa_rss_ip = RTE_ETH_RSS_IP;
const uint64_t ironsa_rss_udp = RTE_ETH_RSS_UDP;
const uint64_t ironsa_rss_tcp = RTE_ETH_RSS_TCP;
const uint64_t ironsa_rx_offload_security = RTE_ETH_RX_OFFLOAD_SECURITY;
const uint64_t ironsa_tx_offload_security = RTE_ETH_TX_OFFLOAD_SECURITY;
const uint64_t ironsa_rx_offload_rss_hash = RTE_ETH_RX_OFFLOAD_RSS_HASH;
const uint64_t ironsa_rx_offload_checksum = RTE_ETH_RX_OFFLOAD_CHECKSUM;
const uint64_t ironsa_tx_offload_ipv4_cksum = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
const uint64_t ironsa_tx_offload_multi_segs = RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
const uint64_t ironsa_mbuf_f_rx_rss_hash = RTE_MBUF_F_RX_RSS_HASH;
const uint64_t ironsa_mbuf_f_rx_sec_offload = RTE_MBUF_F_RX_SEC_OFFLOAD;
const uint64_t ironsa_mbuf_f_rx_sec_offload_failed = RTE_MBUF_F_RX_SEC_OFFLOAD_FAILED;
const uint64_t ironsa_mbuf_f_tx_sec_offload = RTE_MBUF_F_TX_SEC_OFFLOAD;

/* Values mirrored as Rust constants in src/ethdev.rs (mod offload). */
_Static_assert(RTE_ETH_RX_OFFLOAD_IPV4_CKSUM == (1ULL << 1), "rx ipv4 cksum");
_Static_assert(RTE_ETH_RX_OFFLOAD_UDP_CKSUM == (1ULL << 2), "rx udp cksum");
_Static_assert(RTE_ETH_RX_OFFLOAD_TCP_CKSUM == (1ULL << 3), "rx tcp cksum");
_Static_assert(RTE_ETH_RX_OFFLOAD_SCATTER == (1ULL << 13), "rx scatter");
_Static_assert(RTE_ETH_RX_OFFLOAD_SECURITY == (1ULL << 15), "rx security");
_Static_assert(RTE_ETH_RX_OFFLOAD_RSS_HASH == (1ULL << 19), "rx rss hash");
_Static_assert(RTE_ETH_TX_OFFLOAD_IPV4_CKSUM == (1ULL << 1), "tx ipv4 cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_UDP_CKSUM == (1ULL << 2), "tx udp cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_TCP_CKSUM == (1ULL << 3), "tx tcp cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_MULTI_SEGS == (1ULL << 15), "tx multi segs");
_Static_assert(RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE == (1ULL << 16), "tx fast free");
_Static_assert(RTE_ETH_TX_OFFLOAD_SECURITY == (1ULL << 17), "tx security");

int ironsa_rte_errno(void) { return rte_errno; }
void ironsa_set_rte_errno(int value) { rte_errno = value; }
unsigned ironsa_lcore_id(void) { return rte_lcore_id(); }

uint16_t ironsa_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t ironsa_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *ironsa_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int ironsa_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}
void ironsa_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void ironsa_pktmbuf_reset(struct rte_mbuf *m) { rte_pktmbuf_reset(m); }
uint8_t *ironsa_pktmbuf_mtod(const struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
uint16_t ironsa_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t ironsa_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t ironsa_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint16_t ironsa_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t ironsa_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint8_t *ironsa_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len)
{
    return (uint8_t *)rte_pktmbuf_prepend(m, len);
}
uint8_t *ironsa_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
    return (uint8_t *)rte_pktmbuf_append(m, len);
}
uint8_t *ironsa_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return (uint8_t *)rte_pktmbuf_adj(m, len); }
int ironsa_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint64_t ironsa_pktmbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }
void ironsa_pktmbuf_set_ol_flags(struct rte_mbuf *m, uint64_t flags) { m->ol_flags = flags; }
uint16_t ironsa_pktmbuf_port(const struct rte_mbuf *m) { return m->port; }
uint32_t ironsa_pktmbuf_rss_hash(const struct rte_mbuf *m) { return m->hash.rss; }
struct rte_mempool *ironsa_pktmbuf_pool(const struct rte_mbuf *m) { return m->pool; }
unsigned ironsa_mempool_size(const struct rte_mempool *mp) { return mp->size; }

unsigned ironsa_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
    return rte_ring_enqueue_burst(r, objs, n, NULL);
}
unsigned ironsa_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
    return rte_ring_dequeue_burst(r, objs, n, NULL);
}
unsigned ironsa_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned ironsa_ring_capacity(const struct rte_ring *r) { return rte_ring_get_capacity(r); }

uint16_t ironsa_cryptodev_enqueue_burst(uint8_t dev, uint16_t qp, struct rte_crypto_op **ops, uint16_t n)
{
    return rte_cryptodev_enqueue_burst(dev, qp, ops, n);
}
uint16_t ironsa_cryptodev_dequeue_burst(uint8_t dev, uint16_t qp, struct rte_crypto_op **ops, uint16_t n)
{
    return rte_cryptodev_dequeue_burst(dev, qp, ops, n);
}
struct rte_crypto_op *ironsa_crypto_sym_op_alloc(struct rte_mempool *mp)
{
    return rte_crypto_op_alloc(mp, RTE_CRYPTO_OP_TYPE_SYMMETRIC);
}
void ironsa_crypto_op_free(struct rte_crypto_op *op) { rte_crypto_op_free(op); }
int ironsa_crypto_op_status(const struct rte_crypto_op *op) { return op->status; }
struct rte_mbuf *ironsa_crypto_op_m_src(const struct rte_crypto_op *op) { return op->sym->m_src; }
void ironsa_crypto_op_set_m_src(struct rte_crypto_op *op, struct rte_mbuf *m) { op->sym->m_src = m; }

uint16_t ironsa_crypto_op_priv_offset(void)
{
    return (uint16_t)(sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op));
}
uint8_t *ironsa_crypto_op_priv(struct rte_crypto_op *op)
{
    return rte_crypto_op_ctod_offset(op, uint8_t *, ironsa_crypto_op_priv_offset());
}
uint16_t ironsa_crypto_op_priv_size(const struct rte_crypto_op *op)
{
    return __rte_crypto_op_get_priv_data_size(op->mempool);
}

int ironsa_crypto_op_set_aead(struct rte_crypto_op *op, void *session, struct rte_mbuf *m,
                              uint32_t data_off, uint32_t data_len, uint32_t digest_off,
                              uint16_t aad_priv_off)
{
    struct rte_crypto_sym_op *sym = op->sym;

    if (rte_crypto_op_attach_sym_session(op, session) != 0)
        return -EINVAL;
    op->status = RTE_CRYPTO_OP_STATUS_NOT_PROCESSED;
    sym->m_src = m;
    sym->m_dst = NULL;
    sym->aead.data.offset = data_off;
    sym->aead.data.length = data_len;
    sym->aead.digest.data = rte_pktmbuf_mtod_offset(m, uint8_t *, digest_off);
    sym->aead.digest.phys_addr = rte_pktmbuf_iova_offset(m, digest_off);
    uint16_t off = (uint16_t)(ironsa_crypto_op_priv_offset() + aad_priv_off);
    sym->aead.aad.data = rte_crypto_op_ctod_offset(op, uint8_t *, off);
    sym->aead.aad.phys_addr = rte_crypto_op_ctophys_offset(op, off);
    return 0;
}

int ironsa_cryptodev_aes_gcm_caps(uint8_t dev, struct ironsa_aead_caps *out)
{
    struct rte_cryptodev_sym_capability_idx idx;
    const struct rte_cryptodev_symmetric_capability *cap;

    memset(&idx, 0, sizeof(idx));
    idx.type = RTE_CRYPTO_SYM_XFORM_AEAD;
    idx.algo.aead = RTE_CRYPTO_AEAD_AES_GCM;
    cap = rte_cryptodev_sym_capability_get(dev, &idx);
    if (cap == NULL)
        return -ENOTSUP;
    out->key_size.min = cap->aead.key_size.min;
    out->key_size.max = cap->aead.key_size.max;
    out->key_size.increment = cap->aead.key_size.increment;
    out->digest_size.min = cap->aead.digest_size.min;
    out->digest_size.max = cap->aead.digest_size.max;
    out->digest_size.increment = cap->aead.digest_size.increment;
    out->aad_size.min = cap->aead.aad_size.min;
    out->aad_size.max = cap->aead.aad_size.max;
    out->aad_size.increment = cap->aead.aad_size.increment;
    out->iv_size.min = cap->aead.iv_size.min;
    out->iv_size.max = cap->aead.iv_size.max;
    out->iv_size.increment = cap->aead.iv_size.increment;
    return 0;
}

void *ironsa_cryptodev_aes_gcm_session(uint8_t dev, struct rte_mempool *pool, int encrypt,
                                        const uint8_t *key, uint16_t key_len, uint16_t iv_offset,
                                        uint16_t iv_len, uint16_t digest_len, uint16_t aad_len)
{
    struct rte_crypto_sym_xform xform;
    void *sess;

    memset(&xform, 0, sizeof(xform));
    xform.type = RTE_CRYPTO_SYM_XFORM_AEAD;
    xform.next = NULL;
    xform.aead.op = encrypt ? RTE_CRYPTO_AEAD_OP_ENCRYPT : RTE_CRYPTO_AEAD_OP_DECRYPT;
    xform.aead.algo = RTE_CRYPTO_AEAD_AES_GCM;
    xform.aead.key.data = key;
    xform.aead.key.length = key_len;
    xform.aead.iv.offset = iv_offset;
    xform.aead.iv.length = iv_len;
    xform.aead.digest_length = digest_len;
    xform.aead.aad_length = aad_len;
    sess = rte_cryptodev_sym_session_create(dev, &xform, pool);
    /* The PMD copied the key into its private session data. */
    memset(&xform, 0, sizeof(xform));
    return sess;
}

int ironsa_cryptodev_has_cpu_crypto(uint8_t dev)
{
    struct rte_cryptodev_info info;

    memset(&info, 0, sizeof(info));
    rte_cryptodev_info_get(dev, &info);
    return (info.feature_flags & RTE_CRYPTODEV_FF_SYM_CPU_CRYPTO) != 0;
}

int ironsa_cpu_aead(uint8_t dev, void *session, uint8_t *data, uint32_t len, uint8_t *iv,
                    uint8_t *aad, uint8_t *digest)
{
    struct rte_crypto_vec buf = {.base = data, .iova = 0, .len = len, .tot_len = len};
    struct rte_crypto_sgl sgl = {.vec = &buf, .num = 1};
    struct rte_crypto_va_iova_ptr iv_ptr = {.va = iv, .iova = 0};
    struct rte_crypto_va_iova_ptr aad_ptr = {.va = aad, .iova = 0};
    struct rte_crypto_va_iova_ptr digest_ptr = {.va = digest, .iova = 0};
    int32_t status = -ENOTSUP;
    struct rte_crypto_sym_vec vec;
    union rte_crypto_sym_ofs ofs;

    memset(&vec, 0, sizeof(vec));
    vec.num = 1;
    vec.src_sgl = &sgl;
    vec.dest_sgl = NULL;
    vec.iv = &iv_ptr;
    vec.aad = &aad_ptr;
    vec.digest = &digest_ptr;
    vec.status = &status;
    /* The whole buffer is the cipher (and authenticated) region. */
    ofs.raw = 0;
    if (rte_cryptodev_sym_cpu_crypto_process(dev, session, ofs, &vec) == 1)
        return 0;
    return status == 0 ? -EIO : status;
}

unsigned ironsa_cpu_aead_bulk(uint8_t dev, void *session, unsigned n, uint8_t *const *data, const uint32_t *len,
                              uint8_t *const *iv, uint8_t *const *aad, uint8_t *const *digest, int32_t *status)
{
    struct rte_crypto_vec bufs[64];
    struct rte_crypto_sgl sgl[64];
    struct rte_crypto_va_iova_ptr ivs[64], aads[64], digests[64];
    struct rte_crypto_sym_vec vec;
    union rte_crypto_sym_ofs ofs;
    unsigned i;

    if (n > 64)
        return 0;
    for (i = 0; i < n; i++) {
        bufs[i].base = data[i];
        bufs[i].iova = 0;
        bufs[i].len = len[i];
        bufs[i].tot_len = len[i];
        sgl[i].vec = &bufs[i];
        sgl[i].num = 1;
        ivs[i].va = iv[i];
        ivs[i].iova = 0;
        aads[i].va = aad[i];
        aads[i].iova = 0;
        digests[i].va = digest[i];
        digests[i].iova = 0;
        status[i] = ENOTSUP;
    }
    memset(&vec, 0, sizeof(vec));
    vec.num = n;
    vec.src_sgl = sgl;
    vec.dest_sgl = NULL;
    vec.iv = ivs;
    vec.aad = aads;
    vec.digest = digests;
    vec.status = status;
    ofs.raw = 0;
    return rte_cryptodev_sym_cpu_crypto_process(dev, session, ofs, &vec);
}

int ironsa_security_caps(void *ctx, struct ironsa_sec_cap *out, int max)
{
    const struct rte_security_capability *cap;
    int n = 0;

    if (ctx == NULL)
        return 0;
    cap = rte_security_capabilities_get((struct rte_security_ctx *)ctx);
    if (cap == NULL)
        return 0;
    for (; cap->action != RTE_SECURITY_ACTION_TYPE_NONE; cap++, n++) {
        if (n < max) {
            out[n].action = cap->action;
            out[n].protocol = cap->protocol;
            if (cap->protocol == RTE_SECURITY_PROTOCOL_IPSEC) {
                out[n].ipsec_proto = cap->ipsec.proto;
                out[n].ipsec_mode = cap->ipsec.mode;
                out[n].ipsec_direction = cap->ipsec.direction;
                out[n].replay_win_sz_max = cap->ipsec.replay_win_sz_max;
            } else {
                out[n].ipsec_proto = 0;
                out[n].ipsec_mode = 0;
                out[n].ipsec_direction = 0;
                out[n].replay_win_sz_max = 0;
            }
        }
    }
    return n;
}

/* Fills `conf` (and its AEAD transform `xf`) for `sa`. */
static int ipsec_conf_fill(const struct ironsa_ipsec_sa *sa, struct rte_security_session_conf *conf,
                           struct rte_crypto_sym_xform *xf)
{
    struct rte_security_ipsec_xform *ipsec = &conf->ipsec;

    if (sa == NULL || sa->key == NULL)
        return -EINVAL;
    memset(conf, 0, sizeof(*conf));
    memset(xf, 0, sizeof(*xf));
    conf->action_type = RTE_SECURITY_ACTION_TYPE_INLINE_CRYPTO;
    conf->protocol = RTE_SECURITY_PROTOCOL_IPSEC;
    ipsec->spi = sa->spi;
    memcpy(&ipsec->salt, sa->salt, sizeof(ipsec->salt));
    ipsec->direction = sa->egress ? RTE_SECURITY_IPSEC_SA_DIR_EGRESS : RTE_SECURITY_IPSEC_SA_DIR_INGRESS;
    ipsec->proto = RTE_SECURITY_IPSEC_SA_PROTO_ESP;
    ipsec->mode = sa->tunnel ? RTE_SECURITY_IPSEC_SA_MODE_TUNNEL : RTE_SECURITY_IPSEC_SA_MODE_TRANSPORT;
    ipsec->options.esn = sa->esn ? 1 : 0;
    ipsec->options.udp_encap = sa->udp_encap ? 1 : 0;
    ipsec->esn.value = sa->esn_initial;
    ipsec->replay_win_sz = sa->replay_win_sz;
    if (sa->udp_encap) {
        ipsec->udp.sport = sa->sport;
        ipsec->udp.dport = sa->dport;
    }
    if (sa->tunnel) {
        if (sa->ipv6) {
            ipsec->tunnel.type = RTE_SECURITY_IPSEC_TUNNEL_IPV6;
            memcpy(&ipsec->tunnel.ipv6.src_addr, sa->src, 16);
            memcpy(&ipsec->tunnel.ipv6.dst_addr, sa->dst, 16);
            ipsec->tunnel.ipv6.hlimit = 64;
        } else {
            ipsec->tunnel.type = RTE_SECURITY_IPSEC_TUNNEL_IPV4;
            memcpy(&ipsec->tunnel.ipv4.src_ip, sa->src, 4);
            memcpy(&ipsec->tunnel.ipv4.dst_ip, sa->dst, 4);
            ipsec->tunnel.ipv4.ttl = 64;
        }
    }
    xf->type = RTE_CRYPTO_SYM_XFORM_AEAD;
    xf->next = NULL;
    xf->aead.op = sa->egress ? RTE_CRYPTO_AEAD_OP_ENCRYPT : RTE_CRYPTO_AEAD_OP_DECRYPT;
    xf->aead.algo = RTE_CRYPTO_AEAD_AES_GCM;
    xf->aead.key.data = sa->key;
    xf->aead.key.length = sa->key_len;
    xf->aead.iv.offset = 0;
    xf->aead.iv.length = sa->iv_len;
    xf->aead.digest_length = sa->digest_len;
    xf->aead.aad_length = sa->aad_len;
    conf->crypto_xform = xf;
    conf->userdata = NULL;
    return 0;
}

int ironsa_security_ipsec_conf_view(const struct ironsa_ipsec_sa *sa, struct ironsa_ipsec_conf_view *out)
{
    struct rte_security_session_conf conf;
    struct rte_crypto_sym_xform xf;
    int ret = ipsec_conf_fill(sa, &conf, &xf);

    memset(out, 0, sizeof(*out));
    if (ret != 0)
        return ret;
    out->action = conf.action_type;
    out->protocol = conf.protocol;
    out->spi = conf.ipsec.spi;
    memcpy(out->salt, &conf.ipsec.salt, 4);
    out->direction = conf.ipsec.direction;
    out->proto = conf.ipsec.proto;
    out->mode = conf.ipsec.mode;
    out->esn = conf.ipsec.options.esn;
    out->esn_value = conf.ipsec.esn.value;
    out->udp_encap = conf.ipsec.options.udp_encap;
    out->sport = conf.ipsec.udp.sport;
    out->dport = conf.ipsec.udp.dport;
    out->replay_win_sz = conf.ipsec.replay_win_sz;
    out->tunnel_type = conf.ipsec.tunnel.type;
    if (conf.ipsec.tunnel.type == RTE_SECURITY_IPSEC_TUNNEL_IPV6) {
        memcpy(out->src, &conf.ipsec.tunnel.ipv6.src_addr, 16);
        memcpy(out->dst, &conf.ipsec.tunnel.ipv6.dst_addr, 16);
        out->ttl = conf.ipsec.tunnel.ipv6.hlimit;
    } else if (conf.ipsec.tunnel.type == RTE_SECURITY_IPSEC_TUNNEL_IPV4) {
        memcpy(out->src, &conf.ipsec.tunnel.ipv4.src_ip, 4);
        memcpy(out->dst, &conf.ipsec.tunnel.ipv4.dst_ip, 4);
        out->ttl = conf.ipsec.tunnel.ipv4.ttl;
    }
    out->xform_type = conf.crypto_xform->type;
    out->aead_algo = conf.crypto_xform->aead.algo;
    out->aead_op = conf.crypto_xform->aead.op;
    out->key_len = conf.crypto_xform->aead.key.length;
    out->iv_len = conf.crypto_xform->aead.iv.length;
    out->digest_len = conf.crypto_xform->aead.digest_length;
    out->aad_len = conf.crypto_xform->aead.aad_length;
    return 0;
}

static int range_has(uint16_t v, uint16_t min, uint16_t max, uint16_t inc)
{
    if (v < min || v > max)
        return 0;
    if (inc == 0)
        return v == min;
    return (v - min) % inc == 0;
}

int ironsa_security_ipsec_supported(void *ctx, const struct ironsa_ipsec_sa *sa)
{
    struct rte_security_capability_idx idx;
    const struct rte_security_capability *cap;
    const struct rte_cryptodev_capabilities *c;

    if (ctx == NULL || sa == NULL)
        return 0;
    memset(&idx, 0, sizeof(idx));
    idx.action = RTE_SECURITY_ACTION_TYPE_INLINE_CRYPTO;
    idx.protocol = RTE_SECURITY_PROTOCOL_IPSEC;
    idx.ipsec.proto = RTE_SECURITY_IPSEC_SA_PROTO_ESP;
    idx.ipsec.mode = sa->tunnel ? RTE_SECURITY_IPSEC_SA_MODE_TUNNEL : RTE_SECURITY_IPSEC_SA_MODE_TRANSPORT;
    idx.ipsec.direction = sa->egress ? RTE_SECURITY_IPSEC_SA_DIR_EGRESS : RTE_SECURITY_IPSEC_SA_DIR_INGRESS;
    cap = rte_security_capability_get((struct rte_security_ctx *)ctx, &idx);
    if (cap == NULL)
        return 0;
    if ((sa->esn && !cap->ipsec.options.esn) || (sa->udp_encap && !cap->ipsec.options.udp_encap))
        return 0;
    for (c = cap->crypto_capabilities; c != NULL && c->op != RTE_CRYPTO_OP_TYPE_UNDEFINED; c++) {
        if (c->op != RTE_CRYPTO_OP_TYPE_SYMMETRIC || c->sym.xform_type != RTE_CRYPTO_SYM_XFORM_AEAD ||
            c->sym.aead.algo != RTE_CRYPTO_AEAD_AES_GCM)
            continue;
        if (range_has(sa->key_len, c->sym.aead.key_size.min, c->sym.aead.key_size.max,
                      c->sym.aead.key_size.increment) &&
            range_has(sa->digest_len, c->sym.aead.digest_size.min, c->sym.aead.digest_size.max,
                      c->sym.aead.digest_size.increment) &&
            range_has(sa->iv_len, c->sym.aead.iv_size.min, c->sym.aead.iv_size.max,
                      c->sym.aead.iv_size.increment))
            return 1;
    }
    return 0;
}

struct rte_mempool *ironsa_security_session_pool(const char *name, void *ctx, unsigned n)
{
    unsigned size;

    if (ctx == NULL) {
        rte_errno = EINVAL;
        return NULL;
    }
    size = rte_security_session_get_size((struct rte_security_ctx *)ctx);
    if (size == 0) {
        rte_errno = ENOTSUP;
        return NULL;
    }
    return rte_mempool_create(name, n, size, 0, 0, NULL, NULL, NULL, NULL, SOCKET_ID_ANY, 0);
}

void *ironsa_security_ipsec_session_create(void *ctx, const struct ironsa_ipsec_sa *sa, struct rte_mempool *mp)
{
    struct rte_security_session_conf conf;
    struct rte_crypto_sym_xform xf;
    void *sess;

    if (ctx == NULL || mp == NULL || ipsec_conf_fill(sa, &conf, &xf) != 0) {
        rte_errno = EINVAL;
        return NULL;
    }
    sess = rte_security_session_create((struct rte_security_ctx *)ctx, &conf, mp);
    /* The PMD copied the key; no copy of its pointer stays here. */
    memset(&xf, 0, sizeof(xf));
    memset(&conf, 0, sizeof(conf));
    return sess;
}

int ironsa_security_session_destroy(void *ctx, void *sess)
{
    return rte_security_session_destroy((struct rte_security_ctx *)ctx, sess);
}

int ironsa_security_tx_prepare(void *ctx, void *sess, struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len,
                               int ipv6)
{
    m->ol_flags |= RTE_MBUF_F_TX_SEC_OFFLOAD | (ipv6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4);
    m->l2_len = l2_len;
    m->l3_len = l3_len;
    return rte_security_set_pkt_metadata((struct rte_security_ctx *)ctx, sess, m, NULL);
}

/* Everything one rte_flow rule points to (items' specs and masks, action confs). */
struct flow_rule {
    struct rte_flow_attr attr;
    struct rte_flow_item items[IRONSA_FLOW_MAX_ITEMS];
    struct rte_flow_action actions[IRONSA_FLOW_MAX_ACTIONS];
    struct rte_flow_item_ipv4 ip4, ip4_mask;
    struct rte_flow_item_ipv6 ip6, ip6_mask;
    struct rte_flow_item_udp udp, udp_mask;
    struct rte_flow_item_esp esp, esp_mask;
    struct rte_flow_action_security security;
    struct rte_flow_action_queue queue;
};

/* Fills `r` for `sa` (addresses as the packets carry them) and `sess`. */
static int flow_fill(const struct ironsa_ipsec_sa *sa, void *sess, uint16_t queue, int fate, struct flow_rule *r)
{
    int n = 0, a = 0;

    memset(r, 0, sizeof(*r));
    if (fate < 0 || fate > 2)
        return -EINVAL;
    r->attr.ingress = sa->egress ? 0 : 1;
    r->attr.egress = sa->egress ? 1 : 0;
    r->items[n++].type = RTE_FLOW_ITEM_TYPE_ETH;
    if (sa->ipv6) {
        r->items[n].type = RTE_FLOW_ITEM_TYPE_IPV6;
        if (sa->tunnel) {
            memcpy(r->ip6.hdr.src_addr, sa->src, 16);
            memcpy(r->ip6.hdr.dst_addr, sa->dst, 16);
            memset(r->ip6_mask.hdr.src_addr, 0xff, 16);
            memset(r->ip6_mask.hdr.dst_addr, 0xff, 16);
            r->items[n].spec = &r->ip6;
            r->items[n].mask = &r->ip6_mask;
        }
    } else {
        r->items[n].type = RTE_FLOW_ITEM_TYPE_IPV4;
        if (sa->tunnel) {
            memcpy(&r->ip4.hdr.src_addr, sa->src, 4);
            memcpy(&r->ip4.hdr.dst_addr, sa->dst, 4);
            r->ip4_mask.hdr.src_addr = UINT32_MAX;
            r->ip4_mask.hdr.dst_addr = UINT32_MAX;
            r->items[n].spec = &r->ip4;
            r->items[n].mask = &r->ip4_mask;
        }
    }
    n++;
    if (sa->udp_encap) {
        r->udp.hdr.dst_port = rte_cpu_to_be_16(sa->dport);
        r->udp_mask.hdr.dst_port = UINT16_MAX;
        r->items[n].type = RTE_FLOW_ITEM_TYPE_UDP;
        r->items[n].spec = &r->udp;
        r->items[n].mask = &r->udp_mask;
        n++;
    }
    r->esp.hdr.spi = rte_cpu_to_be_32(sa->spi);
    r->esp_mask.hdr.spi = UINT32_MAX;
    r->items[n].type = RTE_FLOW_ITEM_TYPE_ESP;
    r->items[n].spec = &r->esp;
    r->items[n].mask = &r->esp_mask;
    n++;
    r->items[n].type = RTE_FLOW_ITEM_TYPE_END;

    r->security.security_session = sess;
    r->actions[a].type = RTE_FLOW_ACTION_TYPE_SECURITY;
    r->actions[a++].conf = &r->security;
    if (!sa->egress && fate == 0) {
        r->queue.index = queue;
        r->actions[a].type = RTE_FLOW_ACTION_TYPE_QUEUE;
        r->actions[a++].conf = &r->queue;
    } else if (!sa->egress && fate == 1) {
        r->actions[a++].type = RTE_FLOW_ACTION_TYPE_PASSTHRU;
    }
    r->actions[a].type = RTE_FLOW_ACTION_TYPE_END;
    return 0;
}

int ironsa_security_flow_view(const struct ironsa_ipsec_sa *sa, uint16_t queue, int fate,
                              struct ironsa_flow_view *out)
{
    struct flow_rule r;
    int i, ret = flow_fill(sa, NULL, queue, fate, &r);

    memset(out, 0, sizeof(*out));
    if (ret != 0)
        return ret;
    out->ingress = r.attr.ingress;
    out->egress = r.attr.egress;
    for (i = 0; i < IRONSA_FLOW_MAX_ITEMS; i++) {
        out->item_types[i] = r.items[i].type;
        if (r.items[i].type == RTE_FLOW_ITEM_TYPE_END)
            break;
    }
    out->n_items = i;
    for (i = 0; i < out->n_items; i++) {
        switch ((int)r.items[i].type) {
        case RTE_FLOW_ITEM_TYPE_IPV4:
            if (r.items[i].spec != NULL) {
                memcpy(out->src, &r.ip4.hdr.src_addr, 4);
                memcpy(out->dst, &r.ip4.hdr.dst_addr, 4);
                memcpy(out->src_mask, &r.ip4_mask.hdr.src_addr, 4);
                memcpy(out->dst_mask, &r.ip4_mask.hdr.dst_addr, 4);
            }
            break;
        case RTE_FLOW_ITEM_TYPE_IPV6:
            out->ipv6 = 1;
            if (r.items[i].spec != NULL) {
                memcpy(out->src, r.ip6.hdr.src_addr, 16);
                memcpy(out->dst, r.ip6.hdr.dst_addr, 16);
                memcpy(out->src_mask, r.ip6_mask.hdr.src_addr, 16);
                memcpy(out->dst_mask, r.ip6_mask.hdr.dst_addr, 16);
            }
            break;
        case RTE_FLOW_ITEM_TYPE_UDP:
            out->udp = 1;
            out->udp_dst = rte_be_to_cpu_16(r.udp.hdr.dst_port);
            out->udp_dst_mask = rte_be_to_cpu_16(r.udp_mask.hdr.dst_port);
            break;
        case RTE_FLOW_ITEM_TYPE_ESP:
            out->spi = rte_be_to_cpu_32(r.esp.hdr.spi);
            out->spi_mask = rte_be_to_cpu_32(r.esp_mask.hdr.spi);
            break;
        default:
            break;
        }
    }
    for (i = 0; i < IRONSA_FLOW_MAX_ACTIONS; i++) {
        out->action_types[i] = r.actions[i].type;
        if (r.actions[i].type == RTE_FLOW_ACTION_TYPE_END)
            break;
        if (r.actions[i].type == RTE_FLOW_ACTION_TYPE_QUEUE)
            out->queue = r.queue.index;
    }
    out->n_actions = i;
    return 0;
}

/* Copies DPDK's flow error message (which may be NULL) into msg. */
static void flow_error_copy(const struct rte_flow_error *err, char *msg, size_t msg_len)
{
    if (msg == NULL || msg_len == 0)
        return;
    snprintf(msg, msg_len, "%s", err->message != NULL ? err->message : "no message from the driver");
}

void *ironsa_security_flow(uint16_t port, const struct ironsa_ipsec_sa *sa, void *sess, uint16_t queue, int fate,
                           int create, int *ret, char *msg, size_t msg_len)
{
    struct flow_rule r;
    struct rte_flow_error err;
    struct rte_flow *flow = NULL;

    memset(&err, 0, sizeof(err));
    *ret = flow_fill(sa, sess, queue, fate, &r);
    if (*ret != 0) {
        if (msg != NULL && msg_len > 0)
            snprintf(msg, msg_len, "invalid flow description");
        return NULL;
    }
    if (!create) {
        *ret = rte_flow_validate(port, &r.attr, r.items, r.actions, &err);
    } else {
        flow = rte_flow_create(port, &r.attr, r.items, r.actions, &err);
        *ret = flow != NULL ? 0 : (rte_errno > 0 ? -rte_errno : -EIO);
    }
    if (*ret != 0)
        flow_error_copy(&err, msg, msg_len);
    return flow;
}

int ironsa_flow_destroy(uint16_t port, void *flow, char *msg, size_t msg_len)
{
    struct rte_flow_error err;
    int ret;

    memset(&err, 0, sizeof(err));
    ret = rte_flow_destroy(port, (struct rte_flow *)flow, &err);
    if (ret != 0)
        flow_error_copy(&err, msg, msg_len);
    return ret;
}
