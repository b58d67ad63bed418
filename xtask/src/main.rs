//! Build, test, bench and QEMU orchestration

fn main() {}
