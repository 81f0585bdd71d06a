//! Double-buffered, loss-free draining of the kernel maps.
//!
//! (API fixed; implementation being written.)

use crate::model::Interval;

/// Errors of a drain.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("not implemented yet")]
    Todo,
}

/// Moves the kernel's per-flow deltas and totals into [`Interval`]s.
pub struct Drainer {
    _private: (),
}

impl Drainer {
    /// Flips the flow buffers, waits for in-flight programs, reads and
    /// clears the retired buffer, and reads the totals.
    pub fn drain(&mut self) -> Result<Interval, DrainError> {
        Err(DrainError::Todo)
    }
}
