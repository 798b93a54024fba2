//! The shared real-peer harness (crate `offsite-testpeers`).
#![allow(unused_imports)]
pub use testpeers::*;
