//! Layers with PyTorch's initialisation and their parameter groups, and the two dropouts.
pub mod dropout;
pub mod init;
pub mod linear;

pub use dropout::{dropout_layer, Dropout};
pub use linear::{Linear, DECAY_GROUP, NO_DECAY_GROUP};
