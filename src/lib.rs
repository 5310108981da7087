//! Switchboard: a contact-center telephony server.
pub mod acd;
pub mod api;
pub mod call;
pub mod cluster;
pub mod config;
pub mod diagnostic;
pub mod events;
pub mod fuzz;
pub mod ivr;
pub mod media;
pub mod reports;
pub mod server;
pub mod sip;
pub mod store;
pub mod web;
pub mod webhooks;
