/* AES-GCM on intel-ipsec-mb's direct API; see imb.h. */
#include <errno.h>
#include <stdalign.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <intel-ipsec-mb.h>

#include "imb.h"

struct ironsa_imb_gcm {
    /* First member: the allocation's 64-byte alignment is the key data's. */
    struct gcm_key_data keys;
    /* The process-wide manager (its GCM function pointers). */
    IMB_MGR *mgr;
    /* 16 or 32. */
    uint32_t key_len;
};

static IMB_MGR *imb_mgr;
static pthread_once_t imb_mgr_once = PTHREAD_ONCE_INIT;

/* One manager for the process: the direct GCM API keeps no state in it. */
static void imb_mgr_init(void)
{
    IMB_MGR *mgr = alloc_mb_mgr(0);

    if (mgr == NULL)
        return;
    init_mb_mgr_auto(mgr, NULL);
    if (imb_get_errno(mgr) != 0) {
        free_mb_mgr(mgr);
        return;
    }
    imb_mgr = mgr;
}

static size_t gcm_alloc_size(void)
{
    return (sizeof(struct ironsa_imb_gcm) + 63) & ~(size_t)63;
}

struct ironsa_imb_gcm *ironsa_imb_gcm_new(const uint8_t *key, uint32_t key_len)
{
    struct ironsa_imb_gcm *gcm;

    if (key == NULL || (key_len != 16 && key_len != 32)) {
        errno = EINVAL;
        return NULL;
    }
    pthread_once(&imb_mgr_once, imb_mgr_init);
    if (imb_mgr == NULL) {
        errno = ENOTSUP;
        return NULL;
    }
    gcm = aligned_alloc(64, gcm_alloc_size());
    if (gcm == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memset(gcm, 0, gcm_alloc_size());
    gcm->mgr = imb_mgr;
    gcm->key_len = key_len;
    if (key_len == 16)
        IMB_AES128_GCM_PRE(imb_mgr, key, &gcm->keys);
    else
        IMB_AES256_GCM_PRE(imb_mgr, key, &gcm->keys);
    return gcm;
}

void ironsa_imb_gcm_free(struct ironsa_imb_gcm *gcm)
{
    if (gcm == NULL)
        return;
    imb_clear_mem(gcm, gcm_alloc_size());
    free(gcm);
}

void ironsa_imb_gcm_direct(const struct ironsa_imb_gcm *gcm, struct ironsa_imb_gcm_direct *out)
{
    out->key = &gcm->keys;
    /* aes_gcm_enc_dec_t with its struct pointers as void pointers: same ABI. */
    if (gcm->key_len == 16) {
        out->enc = (ironsa_imb_gcm_fn)gcm->mgr->gcm128_enc;
        out->dec = (ironsa_imb_gcm_fn)gcm->mgr->gcm128_dec;
    } else {
        out->enc = (ironsa_imb_gcm_fn)gcm->mgr->gcm256_enc;
        out->dec = (ironsa_imb_gcm_fn)gcm->mgr->gcm256_dec;
    }
    out->ctx_size = sizeof(struct gcm_context_data);
    out->ctx_align = alignof(struct gcm_context_data);
}
