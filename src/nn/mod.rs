//! Layers with PyTorch's initialisation and their parameter groups, the two dropouts, and the
//! decay groups any `tch` model can use ([`decay`]).
pub mod decay;
pub mod dropout;
pub mod init;
pub mod linear;

pub use decay::{DECAY_GROUP, NO_DECAY_GROUP};
pub use dropout::{dropout_layer, Dropout};
pub use linear::Linear;
