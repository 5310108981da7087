//! A media packet: the RTP header parser, RTCP reception, and the RFC 4733 / RFC 2198
//! key detectors fed with whatever payload the header points at.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::rtp(data));
