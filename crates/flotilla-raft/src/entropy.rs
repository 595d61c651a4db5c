//! Where a peer's randomness comes from: the operating system's generator,
//! or, on a thread the simulator has seeded, one seeded generator that
//! every simulated peer on that thread draws from in turn. Raft's election
//! timeouts, object uids, cluster ids and generated names all come from
//! here, so one seed replays a whole simulated cluster exactly.

use std::cell::RefCell;
use std::convert::Infallible;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    /// `None` outside the simulator.
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seeds this thread's randomness (`Some`) or returns it to the operating
/// system's (`None`). The simulator runs every simulated peer on one
/// thread, so their draws interleave in the simulation's own order.
pub fn seed_thread(seed: Option<u64>) {
    SEEDED.with(|s| *s.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// Whether this thread's randomness is seeded.
pub fn is_seeded() -> bool {
    SEEDED.with(|s| s.borrow().is_some())
}

pub fn fill(dest: &mut [u8]) {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(rng) => rng.fill_bytes(dest),
        None => rand::rng().fill_bytes(dest),
    })
}

pub fn next_u64() -> u64 {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(rng) => rng.next_u64(),
        None => rand::rng().next_u64(),
    })
}

pub fn next_u32() -> u32 {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(rng) => rng.next_u32(),
        None => rand::rng().next_u32(),
    })
}

/// A number in `0..bound`, without modulo bias worth speaking of for the
/// small bounds it is used with (alphabets, jitter).
pub fn below(bound: u64) -> u64 {
    assert!(bound > 0, "an empty range has no member");
    ((next_u64() as u128 * bound as u128) >> 64) as u64
}

/// openraft's view of this module (it speaks `rand_core` 0.10).
#[derive(Debug, Default)]
pub struct EntropyRng;

impl rand_core_10::TryRng for EntropyRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        fill(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_draws_the_same_sequence_and_others_do_not_share_it() {
        seed_thread(Some(7));
        let first: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        seed_thread(Some(7));
        let again: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        assert_eq!(first, again);
        let other = std::thread::spawn(|| (is_seeded(), next_u64())).join().unwrap();
        assert!(!other.0, "seeding is per thread");
        seed_thread(None);
        assert!(!is_seeded());
        assert!((0..1000).all(|_| below(3) < 3));
    }
}
