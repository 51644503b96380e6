/* board.c - clock, SysTick, USART1 TX and the LED for bitmcu's firmware (board.h). Polled, no
 * interrupts: a byte leaves every 10 bit times (86.8 us at 115200 baud), outside the measured
 * inferences. */
#include "board.h"
#include "ch32v003_regs.h"

#define BOARD_HZ 48000000u
#define BOARD_BAUD 115200u

static void pin_mode(uint32_t port, uint32_t pin, uint32_t mode) {
    GPIO_CFGLR(port) = (GPIO_CFGLR(port) & ~(15u << (4u * pin))) | (mode << (4u * pin));
}

void board_clock(void) {
    FLASH_ACTLR = BOARD_FLASH_LATENCY;
    RCC_CTLR |= RCC_HSION | RCC_PLLON;
    while (!(RCC_CTLR & RCC_PLLRDY)) {
    }
    RCC_CFGR0 = RCC_SW_PLL; /* HCLK = SYSCLK, PLL from the HSI, ADC clock HCLK / 2 */
    while ((RCC_CFGR0 & RCC_SWS_MASK) != RCC_SWS_PLL) {
    }
}

void board_init(void) {
    board_clock();
    STK_CTLR = STK_STE | STK_STCLK_HCLK; /* counting up from 0 (its reset value), no interrupt */
    RCC_APB2PCENR |= RCC_IOPDEN | RCC_USART1EN;
    pin_mode(3, 5, GPIO_AF_PP_10MHZ); /* PD5: USART1 TX */
    USART1_BRR = (BOARD_HZ + BOARD_BAUD / 2u) / BOARD_BAUD;
    USART1_CTLR1 = USART_UE | USART_TE;
#ifdef BOARD_LED_PORT
    RCC_APB2PCENR |= 1u << (2u + BOARD_LED_PORT); /* IOPAEN, IOPCEN or IOPDEN */
    pin_mode(BOARD_LED_PORT, BOARD_LED_PIN, GPIO_OUT_PP_10MHZ);
#endif
}

uint32_t board_cycles(void) { return STK_CNTL; }

static void putc_(uint32_t c) {
    while (!(USART1_STATR & USART_TXE)) {
    }
    USART1_DATAR = c;
}

void board_flush(void) {
    while (!(USART1_STATR & USART_TC)) {
    }
}

void board_puts(const char *s) {
    while (*s) {
        putc_((uint8_t)*s++);
    }
}

/* v / 10 with shifts and adds (Hacker's Delight, 10-1: exact for every 32-bit v) */
static uint32_t div10(uint32_t v) {
    uint32_t q = (v >> 1) + (v >> 2);
    q += q >> 4;
    q += q >> 8;
    q += q >> 16;
    q >>= 3;
    return q + (v - ((q << 3) + (q << 1)) > 9u);
}

void board_print(const char *fmt, uint32_t a, uint32_t b, uint32_t c, uint32_t d, uint32_t e) {
    for (uint32_t ch; (ch = (uint8_t)*fmt++) != 0u;) {
        if (ch != '%') {
            putc_(ch);
            continue;
        }
        char digits[10];
        uint32_t n = 0, v = a;
        a = b; /* the next '%' prints the next argument */
        b = c;
        c = d;
        d = e;
        do {
            const uint32_t q = div10(v);
            digits[n++] = (char)('0' + v - ((q << 3) + (q << 1)));
            v = q;
        } while (v);
        while (n) {
            putc_((uint8_t)digits[--n]);
        }
    }
}

#ifdef BOARD_LED_PORT
void board_led_toggle(void) { GPIO_OUTDR(BOARD_LED_PORT) ^= 1u << BOARD_LED_PIN; }
#endif
