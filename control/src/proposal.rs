//! TEMPORARY interface stub (replaced by the wire branch's implementation).
use crate::crypto::{self, EncrAlg, IntegAlg, KeGroup, PrfAlg};
use crate::wire::ikev2;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeProposal { pub encr: Vec<EncrAlg>, pub integ: Vec<IntegAlg>, pub prf: Vec<PrfAlg>, pub ke: Vec<KeGroup> }
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspProposal { pub encr: Vec<EncrAlg>, pub integ: Vec<IntegAlg>, pub ke: Vec<KeGroup>, pub esn: Vec<bool> }
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError { #[error("bad {0}")] Bad(String) }
pub fn parse_ike_proposals(_s: &str) -> Result<Vec<IkeProposal>, ProposalError> { todo!() }
pub fn parse_esp_proposals(_s: &str) -> Result<Vec<EspProposal>, ProposalError> { todo!() }
impl IkeProposal { pub fn to_wire(&self, _number: u8, _spi: &[u8]) -> ikev2::Proposal { todo!() } }
impl EspProposal { pub fn to_wire(&self, _number: u8, _spi: u32) -> ikev2::Proposal { todo!() } }
pub struct SelectedIke { pub suite: crypto::IkeSuite, pub proposal: ikev2::Proposal }
pub struct SelectedEsp { pub encr: EncrAlg, pub integ: Option<IntegAlg>, pub ke: Option<KeGroup>, pub esn: bool, pub peer_spi: u32, pub proposal: ikev2::Proposal }
#[derive(Debug, Clone, PartialEq, Eq)] pub struct Mismatch { pub offered: Vec<String>, pub accepted: Vec<String>, pub reason: String }
impl fmt::Display for Mismatch { fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.reason) } }
pub fn select_ike(_ours: &[IkeProposal], _offered: &[ikev2::Proposal]) -> Result<SelectedIke, Mismatch> { todo!() }
pub fn select_esp(_ours: &[EspProposal], _offered: &[ikev2::Proposal]) -> Result<SelectedEsp, Mismatch> { todo!() }
pub fn accept_ike_response(_ours: &[IkeProposal], _chosen: &ikev2::Proposal) -> Result<SelectedIke, Mismatch> { todo!() }
pub fn accept_esp_response(_ours: &[EspProposal], _chosen: &ikev2::Proposal) -> Result<SelectedEsp, Mismatch> { todo!() }
