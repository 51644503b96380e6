/* A stand-in for ch32fun.h (https://github.com/cnlohr/ch32fun), for tests only: the names the
 * ch32fun project's main.c uses, so that CI, which cannot fetch ch32fun, compiles and links the
 * folder's C files for the CH32V003 with bitmcu's own startup code and linker script. It does
 * nothing on a chip; the real header sets the clock, the pins and printf on USART1. */
#ifndef CH32FUN_STANDIN_H
#define CH32FUN_STANDIN_H
#include <stdint.h>

#define PD0 0x30
#define GPIO_CFGLR_OUT_10Mhz_PP 1
#define FUN_HIGH 1
#define FUN_LOW 0

typedef struct {
    volatile uint32_t CTLR, SR, CNT, RESERVED0, CMP, RESERVED1;
} SysTick_Type;
#define SysTick ((SysTick_Type *)0xE000F000u)

static inline void SystemInit(void) {}
static inline void funGpioInitAll(void) {}
static inline void funPinMode(int pin, int mode) { (void)pin; (void)mode; }
static inline void funDigitalWrite(int pin, int value) { (void)pin; (void)value; }
static inline void Delay_Ms(uint32_t ms) { (void)ms; }
#define printf(...) ((void)0)

#endif
