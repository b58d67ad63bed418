//! VRPC: ONC RPC records on shared-memory request/response rings
#![no_std]
#![forbid(unsafe_code)]
