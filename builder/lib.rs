//! sov: builds every site of a self-hosted stack into content-addressed
//! artifacts and records them as generations.

pub mod backup;
pub mod build;
pub mod cli;
pub mod deploy;
pub mod init;
pub mod model;
pub mod pack;
pub mod render;
pub mod secrets;
pub mod store;
