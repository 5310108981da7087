//! The SIP stack: wire format, transport edges, transactions, dialogs, registrar and auth.
//!
//! Everything below `transport` is sans-IO: it takes messages and a clock and returns what to
//! send, so it is tested with simulated time. Only `transport` touches sockets (and `cpu`
//! reads the process's CPU time for admission).

pub mod auth;
pub mod auth_guard;
pub mod cpu;
pub mod dialog;
pub mod limits;
pub mod message;
pub mod registrar;
pub mod session_timer;
pub mod stats;
pub mod stun;
pub mod tls;
pub mod transaction;
pub mod transport;
