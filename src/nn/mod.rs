//! The decay groups any `tch` model can use ([`decay`]), PyTorch's `nn.Linear`
//! initialisation for tch's own layers ([`init`]), and an optimizer's state, saved and set
//! ([`optimizer_state`]).
pub mod decay;
pub mod init;
pub mod optimizer_state;

pub use decay::{DECAY_GROUP, NO_DECAY_GROUP};
