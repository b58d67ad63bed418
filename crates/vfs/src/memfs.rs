//! `MemFs`: the in-memory reference implementation of [`crate::FileSystem`].
//!
//! To be written: see docs/ARCHITECTURE.md. (Placeholder module so the crate
//! builds while the model is developed; not exported as done.)
