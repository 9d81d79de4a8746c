/* Headers bound by bindgen for ironsa-ffi (allowlisted in build.rs). */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_eal.h>
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
#include "imb.h"
