//! Mounts a storage-domain export through FUSE

fn main() {}
