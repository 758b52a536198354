//! The decay groups any `tch` model can use ([`decay`]), and PyTorch's `nn.Linear`
//! initialisation for tch's own layers ([`init`]).
pub mod decay;
pub mod init;

pub use decay::{DECAY_GROUP, NO_DECAY_GROUP};
