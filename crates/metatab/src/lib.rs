//! The shared metadata table: seqlocked fattr3 slots guests map read-only
#![no_std]
#![forbid(unsafe_code)]
