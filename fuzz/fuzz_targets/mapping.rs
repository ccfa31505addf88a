//! Fuzz target: arbitrary text as a mapping file (the loader `MappingSet` and hot reload use);
//! a mapping that loads is then run on the delivery a byte of the input picks.
#![no_main]

#[path = "../common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::run_mapping(data);
});
