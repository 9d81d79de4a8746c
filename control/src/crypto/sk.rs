//! SK payload protection over the negotiated cipher: implements [`SkProtect`].

use super::{CryptoError, EncrAlg, IntegAlg};
use crate::wire::ikev2::SkProtect;
use crate::wire::WireError;

/// The cipher (and MAC) protecting SK payloads in one direction.
pub struct SkCipher {
    _private: (),
}

impl SkCipher {
    /// Builds the cipher from SK_e (with salt for AEADs) and SK_a (empty for AEADs).
    pub fn new(encr: EncrAlg, integ: Option<IntegAlg>, encr_key: &[u8], integ_key: &[u8]) -> Result<Self, CryptoError> {
        todo!("crypto helper")
    }
}

impl SkProtect for SkCipher {
    fn iv_len(&self) -> usize { todo!("crypto helper") }
    fn icv_len(&self) -> usize { todo!("crypto helper") }
    fn block_len(&self) -> usize { todo!("crypto helper") }
    fn seal(&self, aad: &[u8], iv: &mut [u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), WireError> { todo!("crypto helper") }
    fn open(&self, aad: &[u8], iv: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), WireError> { todo!("crypto helper") }
}
