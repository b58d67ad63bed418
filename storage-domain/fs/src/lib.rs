//! The storage domain's copy-on-write on-disk file system
#![no_std]
#![forbid(unsafe_code)]
