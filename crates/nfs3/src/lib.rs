//! NFSv3 (RFC 1813), MOUNT v3 and PORTMAP v2 message types
#![no_std]
#![forbid(unsafe_code)]
