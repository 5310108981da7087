//! Anchored media: the RTP side of the B2BUA.
//!
//! Switchboard stays in the media path of every call, so each party only ever
//! sees our address (topology hiding, NAT traversal, and a place for call
//! recording and media features later). This module owns:
//!
//! * [`ports`]: the pool of RTP/RTCP UDP port pairs, leased per call leg;
//! * [`relay`]: one task per call that forwards RTP and RTCP between the two
//!   legs, latches onto the phones' real (NATed) addresses and re-stamps RTP
//!   so each phone sees one continuous stream;
//! * [`sdp`]: rewriting SDP offers and answers so both legs negotiate media
//!   with us, limited to what the relay can carry (PCMU, PCMA, DTMF events).
//!
//! It does not do SIP signalling: the call layer decides when to allocate
//! ports, what SDP to send, and when to start and stop relays.
//!
//! The relay's packet path must never allocate: one receive buffer per
//! socket, headers rewritten in place, no per-packet logging above `trace`.
//! Allocation is fine at call set-up and on SDP changes.

pub mod codec;
pub mod dtmf;
pub mod endpoint;
pub mod kernel;
pub mod mixer;
pub mod ports;
pub mod prompt;
pub mod recorder;
pub mod relay;
pub mod rtcp;
pub mod rtp;
pub mod rtp_stats;
pub mod sdp;
pub mod srtp;
pub mod taps;
