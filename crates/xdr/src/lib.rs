//! XDR (RFC 4506) and ONC RPC (RFC 5531) encoding for no_std
#![no_std]
#![forbid(unsafe_code)]
