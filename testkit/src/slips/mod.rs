//! Slips' side of the Redis contract, written once for every test, the
//! lab bench and `pigeon-slips`: what Slips publishes ([`build`]), what it
//! accepts ([`check`]), and Slips on a host's Redis ([`side`]).

pub mod build;
pub mod check;
// pigeon's own Python `json.dumps` formatting, compiled here too (it is
// crate-private in pigeon): one implementation for pigeon's re-encoding of
// payloads and for the builders of Slips' messages.
#[path = "../../../src/slips/python.rs"]
pub mod python;
pub mod side;

pub use build::{
    PyNum, b64, blame_b64, build_go_message, dumps_str, py_float_repr, pygo_scroll, report_b64,
    report_scroll, request_b64, request_scroll,
};
pub use check::{GopyMsg, Violation, check_gopy, check_gopy_with, now_unix, reasons};
pub use side::{Flow, GoData, Received, SlipsSide, listen, publish};
