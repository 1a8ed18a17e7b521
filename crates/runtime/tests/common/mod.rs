//! Helpers shared by the runtime's integration tests.

/// A seeded pseudo-random generator (a 64-bit LCG): each call returns a number below
/// its argument. Deterministic, so a failing case can be run again.
pub fn random(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    }
}
