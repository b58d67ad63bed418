//! The Xen public ABI as repr(C) Rust types
#![no_std]
#![forbid(unsafe_code)]
