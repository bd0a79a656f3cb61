//! Rules that sit between the handlers and the store: cryptography, credential reads,
//! execution-environment resolution.

pub mod crypto;
pub mod exec_env;
pub mod vault;
