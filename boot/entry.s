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

# Exception entry points (set_trap_table). Xen delivers a PV exception on
# the kernel stack as: saved %rcx, saved %r11, [error code], %rip, %cs,
# %rflags, %rsp, %ss. Each stub restores %rcx/%r11, gives exceptions
# without an error code a zero one, and calls xen_trap(vector, frame),
# which reports the fault and crashes the domain (it never returns).
.macro TRAP_WITH_ERROR name, vector
    .globl \name
\name:
    mov     (%rsp), %rcx
    mov     8(%rsp), %r11
    add     $16, %rsp
    mov     $\vector, %edi
    mov     %rsp, %rsi              # error code, rip, cs, rflags, rsp, ss
    and     $-16, %rsp
    call    xen_trap
    ud2
.endm
.macro TRAP_WITHOUT_ERROR name, vector
    .globl \name
\name:
    mov     (%rsp), %rcx
    mov     8(%rsp), %r11
    add     $16, %rsp
    push    $0
    mov     $\vector, %edi
    mov     %rsp, %rsi
    and     $-16, %rsp
    call    xen_trap
    ud2
.endm

    .section .text.traps, "ax"
TRAP_WITHOUT_ERROR trap_divide_error, 0
TRAP_WITHOUT_ERROR trap_breakpoint, 3
TRAP_WITHOUT_ERROR trap_invalid_opcode, 6
TRAP_WITH_ERROR trap_double_fault, 8
TRAP_WITH_ERROR trap_stack_fault, 12
TRAP_WITH_ERROR trap_general_protection, 13
TRAP_WITH_ERROR trap_page_fault, 14
TRAP_WITH_ERROR trap_alignment_check, 17
