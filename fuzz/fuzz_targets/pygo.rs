//! What Slips publishes (and what peers send as payloads): any text into
//! `slips::parse_pygo` and `slips::payload::validate`, and the `message`
//! of every scroll that parses into `validate` too.
//!
//! Invariant checked besides "no panic": a payload that validates is ASCII
//! standard base64 of a JSON object about a valid IP address.

#![no_main]

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use libfuzzer_sys::fuzz_target;
use pigeon::slips::payload::{self, is_ip};
use pigeon::slips::{FromSlips, parse_pygo};

fn check(text: &str) {
    if let Ok(valid) = payload::validate(text) {
        let b64 = text.strip_suffix('\n').unwrap_or(text);
        assert!(b64.is_ascii());
        let bytes = BASE64_STANDARD
            .decode(b64)
            .expect("valid payload is base64");
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).expect("valid payload is JSON");
        assert!(value.is_object());
        assert!(is_ip(&valid.key));
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text);
    if let Ok(FromSlips::Send { message, .. }) = parse_pygo(&text) {
        check(&message);
    }
    // The same bytes as the decoded inner message, so the fuzzer reaches
    // the JSON checks without having to learn base64.
    check(&BASE64_STANDARD.encode(data));
});
