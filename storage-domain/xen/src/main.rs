//! The storage domain as a Xen PV unikernel

fn main() {}
