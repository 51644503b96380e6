/* board.h - what every bitmcu firmware shows on a board: its results on USART1 TX (PD5, 115200
 * 8N1), cycles counted by SysTick at 48 MHz, and an LED that toggles at each inference (where
 * BOARD_LED_PORT and BOARD_LED_PIN are defined: port 0 = GPIOA, 2 = GPIOC, 3 = GPIOD). The same
 * registers on the CH32V003 and the CH32V002; BOARD_FLASH_LATENCY is the chip's wait states at
 * 48 MHz. */
#ifndef BITMCU_BOARD_H
#define BITMCU_BOARD_H
#include <stdint.h>

void board_clock(void);      /* 48 MHz: HSI x 2 PLL (again after a wake from standby) */
void board_init(void);       /* the clock, SysTick, USART1, the LED pin */
uint32_t board_cycles(void); /* SysTick: core clock cycles */
/* fmt on USART1, each '%' replaced by the next of a, b, c, d, e in decimal (no division: the
 * CH32V003 has none) */
void board_print(const char *fmt, uint32_t a, uint32_t b, uint32_t c, uint32_t d, uint32_t e);
void board_puts(const char *s); /* s as it is */
void board_flush(void);         /* wait until USART1 has sent everything (before standby) */
#ifdef BOARD_LED_PORT
void board_led_toggle(void);
#else
#define board_led_toggle() ((void)0)
#endif

#endif
