# Xen ELF notes of the storage domain's PV kernel (AT&T syntax).
#
# The domain builder reads these to learn where the image lives and where
# to enter it; numbers from xen/include/public/elfnote.h (mirrored in
# crates/xen-abi/src/elfnote.rs). Included by storage-domain/xen with
# global_asm!; symbols _start and hypercall_page are in boot/entry.s.

.macro XEN_NOTE_BEGIN type
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 2f - 1f           # namesz
    .long 4f - 3f           # descsz
    .long \type
1:  .asciz "Xen"
2:  .balign 4
3:
.endm
.macro XEN_NOTE_END
4:  .balign 4
    .popsection
.endm
.macro XEN_NOTE_STRING type, text
    XEN_NOTE_BEGIN \type
    .asciz "\text"
    XEN_NOTE_END
.endm
.macro XEN_NOTE_QUAD type, value
    XEN_NOTE_BEGIN \type
    .quad \value
    XEN_NOTE_END
.endm

XEN_NOTE_STRING 6, "storage-domain"        # GUEST_OS
XEN_NOTE_STRING 7, "0.1"                   # GUEST_VERSION
XEN_NOTE_STRING 5, "xen-3.0"               # XEN_VERSION
XEN_NOTE_STRING 8, "generic"               # LOADER
XEN_NOTE_QUAD 3, 0xffffffff80000000       # VIRT_BASE
XEN_NOTE_QUAD 4, 0xffffffff80000000       # PADDR_OFFSET (ELF paddr == vaddr)
XEN_NOTE_QUAD 1, _start                   # ENTRY
XEN_NOTE_QUAD 2, hypercall_page           # HYPERCALL_PAGE
XEN_NOTE_STRING 10, ""                     # FEATURES: none required
