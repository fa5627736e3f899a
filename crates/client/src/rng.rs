//! The client's CSPRNG: ChaCha20 seeded once from the operating system.

use rand_chacha::ChaCha20Rng;
use rand_core::{SeedableRng, TryCryptoRng, TryRng};

use crate::Error;

/// A ChaCha20 CSPRNG seeded from `getrandom` (the OS). Failing to reach the OS generator is an
/// error at construction, so drawing from it afterwards cannot fail.
pub struct OsRng(ChaCha20Rng);

impl std::fmt::Debug for OsRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OsRng(***)")
    }
}

impl OsRng {
    /// Seeds a new generator from the OS.
    pub fn new() -> Result<Self, Error> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| Error::Rng)?;
        Ok(Self(ChaCha20Rng::from_seed(*seed)))
    }
}

impl TryRng for OsRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.0.try_next_u32()
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0.try_next_u64()
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.try_fill_bytes(dst)
    }
}

impl TryCryptoRng for OsRng {}
