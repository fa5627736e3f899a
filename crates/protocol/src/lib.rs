#![doc = "sotto protocol"]
#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod identity;

pub use identity::{IdentityKey, IdentityKeyPair};
