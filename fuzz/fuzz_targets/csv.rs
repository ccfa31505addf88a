//! Fuzz target: arbitrary bytes as a CSV delivery, through every shipped CSV mapping — the
//! engine, validation and routing, as `weiche convert` and `POST /api/v1/deliveries` run them.
#![no_main]

#[path = "../common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::run_format(common::Target::Csv, data);
});
