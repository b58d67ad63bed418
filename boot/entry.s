# Entry of the storage domain's PV kernel (AT&T syntax).
#
# Xen enters in 64-bit mode with paging on (its bootstrap page tables map
# the image, start_info and a small boot stack), event upcalls masked,
# %rsi = virtual address of start_info. We move to our own stack (the
# boot stack is one page; the file system needs more) and call Rust.

    .section .text.boot, "ax"
    .globl _start
_start:
    cld
    lea     boot_stack_top(%rip), %rsp
    xor     %ebp, %ebp
    mov     %rsi, %rdi              # first argument: start_info
    call    xen_start               # never returns
1:  ud2
    jmp     1b

# Xen writes the hypercall stubs here (32 bytes per hypercall).
    .section .text.hypercall_page, "ax"
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .skip 4096

# The kernel stack: 512 KiB after a guard page that start of day unmaps,
# so an overflow faults instead of corrupting the heap below it.
    .section .bss.stack, "aw", @nobits
    .balign 4096
    .globl boot_stack_guard
boot_stack_guard:
    .skip 4096
    .globl boot_stack_bottom
boot_stack_bottom:
    .skip 524288
    .globl boot_stack_top
boot_stack_top:
