//! Budgets per key: the arithmetic of GCRA rates and calendar quotas ([`budget`]), a sharded
//! in-memory store ([`memory`]), a Redis store that several instances share ([`redis`]), and
//! the keyed limiter of the gateway's own endpoints ([`keyed`]).
//!
//! Every decision takes `now` from the caller, so limits are tested with a moved clock
//! instead of sleeps.

pub mod budget;
pub mod keyed;
pub mod memory;
pub mod redis;

pub use budget::{Gcra, Period, Spend};
pub use keyed::KeyedLimiter;
