//! The breaker's states and how they are packed into atomics.

use std::fmt;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow and their outcomes are recorded.
    Closed,
    /// Calls are rejected until `recovery_timeout` has passed.
    Open,
    /// A limited number of trial calls decide whether to close or re-open.
    HalfOpen,
    /// Opened by hand: every call is rejected until [`reset`](super::CircuitBreaker::reset).
    ForcedOpen,
    /// Switched off: every call is permitted and nothing is recorded.
    Disabled,
}

impl CircuitState {
    /// The lower-case name used in logs and metric labels (`closed`, `half_open`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
        }
    }

    /// Every state, in a fixed order.
    pub const ALL: [CircuitState; 5] = [Self::Closed, Self::Open, Self::HalfOpen, Self::ForcedOpen, Self::Disabled];
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// `failure_threshold` failures were in the window.
    FailureThreshold,
    /// The failure rate reached `failure_rate`.
    FailureRate,
    /// The slow-call rate reached `slow_call_rate`.
    SlowCallRate,
    /// `recovery_timeout` passed while open.
    RecoveryTimeout,
    /// `success_threshold` trial calls succeeded.
    TrialsSucceeded,
    /// A trial call failed.
    TrialFailed,
    /// [`force_open`](super::CircuitBreaker::force_open) was called.
    ForcedOpen,
    /// [`disable`](super::CircuitBreaker::disable) was called.
    Disabled,
    /// [`reset`](super::CircuitBreaker::reset) was called.
    Reset,
    /// The fleet's shared state said so (a breaker with `shared = true`), or state kept
    /// across a restart was resumed.
    Shared,
}

impl TransitionReason {
    /// The snake-case name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailureThreshold => "failure_threshold",
            Self::FailureRate => "failure_rate",
            Self::SlowCallRate => "slow_call_rate",
            Self::RecoveryTimeout => "recovery_timeout",
            Self::TrialsSucceeded => "trials_succeeded",
            Self::TrialFailed => "trial_failed",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
            Self::Reset => "reset",
            Self::Shared => "shared",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// The state word: the state's tag in the low 3 bits, a generation counter above it.
// The generation changes on every transition, so a permit taken in one period can tell
// that the breaker has moved on and must not record into the next one.
const TAG_BITS: u32 = 3;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

pub(crate) fn pack(state: CircuitState, generation: u64) -> u64 {
    let tag = match state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
        CircuitState::ForcedOpen => 3,
        CircuitState::Disabled => 4,
    };
    (generation << TAG_BITS) | tag
}

/// True when the state word is closed: the hot path's test, without decoding.
#[inline]
pub(crate) fn is_closed(word: u64) -> bool {
    word & TAG_MASK == 0
}

#[inline]
pub(crate) fn state_of(word: u64) -> CircuitState {
    match word & TAG_MASK {
        0 => CircuitState::Closed,
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        3 => CircuitState::ForcedOpen,
        _ => CircuitState::Disabled,
    }
}

pub(crate) fn generation_of(word: u64) -> u64 {
    word >> TAG_BITS
}

// The half-open word: 24 bits of generation, 20 bits of trial permits issued, 20 bits of
// trial successes. A trial permit only touches the word while its generation matches.
const FIELD_BITS: u32 = 20;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const GEN_MASK: u64 = (1 << 24) - 1;
pub(crate) const ISSUED_ONE: u64 = 1 << FIELD_BITS;

pub(crate) fn half_open_word(generation: u64) -> u64 {
    (generation & GEN_MASK) << (2 * FIELD_BITS)
}

pub(crate) fn half_open_generation(word: u64) -> u64 {
    word >> (2 * FIELD_BITS)
}

pub(crate) fn same_half_open_period(half_open: u64, state_word: u64) -> bool {
    half_open_generation(half_open) == generation_of(state_word) & GEN_MASK
}

pub(crate) fn issued(word: u64) -> u32 {
    ((word >> FIELD_BITS) & FIELD_MASK) as u32
}

pub(crate) fn successes(word: u64) -> u32 {
    (word & FIELD_MASK) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_round_trips() {
        for state in CircuitState::ALL {
            for generation in [0, 1, 77, (1 << 60) - 1] {
                let word = pack(state, generation);
                assert_eq!(state_of(word), state);
                assert_eq!(generation_of(word), generation);
            }
        }
    }

    #[test]
    fn half_open_fields_are_independent() {
        let state_word = pack(CircuitState::HalfOpen, (1 << 24) + 5);
        let mut word = half_open_word(generation_of(state_word));
        word += 3 * ISSUED_ONE + 2;
        assert!(same_half_open_period(word, state_word));
        assert_eq!(issued(word), 3);
        assert_eq!(successes(word), 2);
        assert!(!same_half_open_period(word, pack(CircuitState::HalfOpen, 6)));
    }
}
