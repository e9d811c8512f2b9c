//! Skiff's consensus core (work in progress: types and codec first).

pub mod codec;
pub mod types;

pub use codec::{CodecError, Decode, Encode};
pub use types::*;
