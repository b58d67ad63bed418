//! ELF note types a PV kernel carries (`xen/include/public/elfnote.h`).
//!
//! The notes live in a `.note.Xen` section whose owner name is `"Xen"`;
//! the assembly that emits them is `boot/notes.s`, which uses these numbers.

/// `XEN_ELFNOTE_ENTRY`: virtual address of the entry point.
pub const ENTRY: u32 = 1;
/// `XEN_ELFNOTE_HYPERCALL_PAGE`: virtual address of the hypercall page.
pub const HYPERCALL_PAGE: u32 = 2;
/// `XEN_ELFNOTE_VIRT_BASE`: virtual address the image is mapped at.
pub const VIRT_BASE: u32 = 3;
/// `XEN_ELFNOTE_PADDR_OFFSET`: subtracted from ELF physical addresses.
pub const PADDR_OFFSET: u32 = 4;
/// `XEN_ELFNOTE_XEN_VERSION`: `"xen-3.0"` for every current guest.
pub const XEN_VERSION: u32 = 5;
/// `XEN_ELFNOTE_GUEST_OS`: the guest's name.
pub const GUEST_OS: u32 = 6;
/// `XEN_ELFNOTE_GUEST_VERSION`: the guest's version string.
pub const GUEST_VERSION: u32 = 7;
/// `XEN_ELFNOTE_LOADER`: `"generic"`.
pub const LOADER: u32 = 8;
/// `XEN_ELFNOTE_FEATURES`: `|`-separated feature names, `!` = required.
pub const FEATURES: u32 = 10;
