//! Switchboard: a contact-center telephony server.
pub mod call;
pub mod config;
pub mod sip;
pub mod store;
pub mod media;
pub mod server;
