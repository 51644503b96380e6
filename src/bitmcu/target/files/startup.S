/* startup.S - minimal bare-metal start for bitmcu firmware (CH32V003/CH32V002, RV32E).
 * Sets gp and sp, copies .data and .ramfunc from flash, zeroes .bss, calls main, then writes
 * the DONE event to the marker word and waits. */
    .section .init, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, _stack_top
    /* copy initialized RAM (.data and .ramfunc) from its load address in flash */
    la a0, _data_lma
    la a1, _data_start
    la a2, _data_end
1:  bgeu a1, a2, 2f
    lw a3, 0(a0)
    sw a3, 0(a1)
    addi a0, a0, 4
    addi a1, a1, 4
    j 1b
2:  /* zero .bss */
    la a1, _bss_start
    la a2, _bss_end
3:  bgeu a1, a2, 4f
    sw zero, 0(a1)
    addi a1, a1, 4
    j 3b
4:  call main
    la a1, bitmcu_marker
    li a2, 0x04000000   /* event DONE */
    or a2, a2, a0       /* main's return value in the low bits */
    sw a2, 0(a1)
5:  j 5b
