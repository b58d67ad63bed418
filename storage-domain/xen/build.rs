//! Link the bare-metal build with the PV linker script (`linker/`).
//!
//! Host builds (clippy, tests) are ordinary executables and get nothing.

fn main() {
    println!("cargo:rerun-if-changed=../../linker/storage-domain.ld");
    println!("cargo:rerun-if-changed=../../boot/entry.s");
    println!("cargo:rerun-if-changed=../../boot/notes.s");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let script = std::path::Path::new(&manifest).join("../../linker/storage-domain.ld");
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    }
}
