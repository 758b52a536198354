//! The book sections, each a module that reads top to bottom like its section and implements
//! [`crate::experiment::Experiment`] at its end. A new experiment is one more module here and
//! one more variant where `cli.rs` lists the commands.
pub mod dropout;
pub mod weight_decay;
