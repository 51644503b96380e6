/* ch32v003_regs.h - the CH32V003 registers bitmcu's firmware uses (the die's, and board.c's),
 * after the register map of the CH32V003 reference manual (RCC, FLASH, GPIO, AFIO, EXTI, PWR,
 * I2C1, ADC1, USART1, SysTick, PFIC). Only what is used. */
#ifndef CH32V003_REGS_H
#define CH32V003_REGS_H
#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* RCC: reset and clock control */
#define RCC_CTLR REG32(0x40021000u)
#define RCC_CFGR0 REG32(0x40021004u)
#define RCC_APB2PCENR REG32(0x40021018u)
#define RCC_APB1PCENR REG32(0x4002101Cu)
#define RCC_RSTSCKR REG32(0x40021024u)
#define RCC_LSION (1u << 0)
#define RCC_LSIRDY (1u << 1)
#define RCC_PWREN (1u << 28) /* in APB1PCENR */
#define RCC_HSION (1u << 0)
#define RCC_PLLON (1u << 24)
#define RCC_PLLRDY (1u << 25)
#define RCC_SW_MASK (3u << 0)
#define RCC_SW_PLL (2u << 0)
#define RCC_SWS_MASK (3u << 2)
#define RCC_SWS_PLL (2u << 2)
#define RCC_HPRE_MASK (15u << 4) /* 0: HCLK = SYSCLK */
#define RCC_PLLSRC_HSE (1u << 16) /* clear: PLL from HSI */
#define RCC_AFIOEN (1u << 0)
#define RCC_IOPAEN (1u << 2)
#define RCC_IOPCEN (1u << 4)
#define RCC_IOPDEN (1u << 5)
#define RCC_ADC1EN (1u << 9)
#define RCC_USART1EN (1u << 14)
#define RCC_I2C1EN (1u << 21)
#define RCC_ADCPRE_MASK (31u << 11)

/* FLASH: one wait state from 24 to 48 MHz */
#define FLASH_ACTLR REG32(0x40022000u)
#define FLASH_LATENCY_MASK 3u
#define FLASH_LATENCY_1 1u

/* GPIO ports A, C, D: 4 configuration bits per pin (MODE[1:0], CNF[1:0]) */
#define GPIO_BASE(port) (0x40010800u + 0x400u * (uint32_t)(port)) /* A=0, B=1 (none), C=2, D=3 */
#define GPIO_CFGLR(port) REG32(GPIO_BASE(port) + 0x00u)
#define GPIO_INDR(port) REG32(GPIO_BASE(port) + 0x08u)
#define GPIO_OUTDR(port) REG32(GPIO_BASE(port) + 0x0Cu)
#define GPIO_BSHR(port) REG32(GPIO_BASE(port) + 0x10u)
#define GPIO_IN_ANALOG 0x0u    /* MODE 00, CNF 00 */
#define GPIO_IN_PULL 0x8u      /* MODE 00, CNF 10: pull-up or pull-down (OUTDR bit: up) */
#define GPIO_AF_OD_50MHZ 0xFu  /* MODE 11, CNF 11: alternate function, open drain */
#define GPIO_AF_PP_10MHZ 0x9u  /* MODE 01, CNF 10: alternate function, push-pull */
#define GPIO_OUT_PP_10MHZ 0x1u /* MODE 01, CNF 00: output, push-pull */

/* AFIO_EXTICR: the port of EXTI lines 0..7, 2 bits each (0 = GPIOA, 2 = GPIOC, 3 = GPIOD) */
#define AFIO_EXTICR REG32(0x40010008u)

/* EXTI: lines 0..7 are the pins of that number, line 9 the auto-wakeup */
#define EXTI_EVENR REG32(0x40010404u)
#define EXTI_RTENR REG32(0x40010408u)
#define EXTI_FTENR REG32(0x4001040Cu)
#define EXTI_AWU (1u << 9)

/* PWR: standby (PDDS, reset on every wake from standby) and the auto-wakeup on the LSI:
 * an event every AWUWR counts of LSI / AWUPSC */
#define PWR_CTLR REG32(0x40007000u)
#define PWR_AWUCSR REG32(0x40007008u)
#define PWR_AWUWR REG32(0x4000700Cu)
#define PWR_AWUPSC REG32(0x40007010u)
#define PWR_PDDS (1u << 1)
#define PWR_AWUEN (1u << 1)

/* PFIC_SCTLR: SLEEPDEEP with PDDS is standby; WFITOWFE makes WFI wait for an event */
#define PFIC_SCTLR REG32(0xE000ED10u)
#define PFIC_SLEEPDEEP (1u << 2)
#define PFIC_WFITOWFE (1u << 3)
#define PFIC_SETEVENT (1u << 5) /* write only: an event, which the next wait ends on at once */

/* I2C1: master, 7-bit addresses (default pins PC1 = SDA, PC2 = SCL) */
#define I2C1_CTLR1 REG32(0x40005400u)
#define I2C1_CTLR2 REG32(0x40005404u)
#define I2C1_DATAR REG32(0x40005410u)
#define I2C1_STAR1 REG32(0x40005414u)
#define I2C1_STAR2 REG32(0x40005418u)
#define I2C1_CKCFGR REG32(0x4000541Cu)
#define I2C_PE (1u << 0)
#define I2C_START (1u << 8)
#define I2C_STOP (1u << 9)
#define I2C_SB (1u << 0)
#define I2C_ADDR (1u << 1)
#define I2C_BTF (1u << 2)
#define I2C_TXE (1u << 7)
#define I2C_AF (1u << 10)
#define I2C_BUSY (1u << 1) /* in STAR2 */
#define I2C_FS (1u << 15)  /* CKCFGR: fast mode (duty 0: t_low = 2 t_high, f = PCLK / 3 CCR) */

/* ADC1: single software-triggered conversions */
#define ADC1_STATR REG32(0x40012400u)
#define ADC1_CTLR2 REG32(0x40012408u)
#define ADC1_SAMPTR2 REG32(0x40012410u)
#define ADC1_RSQR1 REG32(0x4001242Cu)
#define ADC1_RSQR3 REG32(0x40012434u)
#define ADC1_RDATAR REG32(0x4001244Cu)
#define ADC_EOC (1u << 1)
#define ADC_ADON (1u << 0)
#define ADC_CAL (1u << 2)
#define ADC_RSTCAL (1u << 3)
#define ADC_EXTSEL_SWSTART (7u << 17)
#define ADC_EXTTRIG (1u << 20)
#define ADC_SWSTART (1u << 22)

/* DMA1 channel 6: I2C1 TX (reference manual table 8-2) */
#define RCC_AHBPCENR REG32(0x40021014u)
#define RCC_DMA1EN (1u << 0)
#define DMA1_INTFR REG32(0x40020000u)
#define DMA1_INTFCR REG32(0x40020004u)
#define DMA1_CFGR6 REG32(0x4002006Cu)
#define DMA1_CNTR6 REG32(0x40020070u)
#define DMA1_PADDR6 REG32(0x40020074u)
#define DMA1_MADDR6 REG32(0x40020078u)
#define DMA_TCIF6 (1u << 21)
#define DMA_EN (1u << 0)
#define DMA_DIR_FROM_MEMORY (1u << 4)
#define DMA_MINC (1u << 7)
#define I2C_DMAEN (1u << 11) /* in CTLR2 */

/* USART1: TX on PD5 (the default mapping); a bit is BRR HCLK cycles */
#define USART1_STATR REG32(0x40013800u)
#define USART1_DATAR REG32(0x40013804u)
#define USART1_BRR REG32(0x40013808u)
#define USART1_CTLR1 REG32(0x4001380Cu)
#define USART_TXE (1u << 7)
#define USART_TC (1u << 6)
#define USART_TE (1u << 3)
#define USART_UE (1u << 13)

/* SysTick: a 32-bit up-counter of HCLK */
#define STK_CTLR REG32(0xE000F000u)
#define STK_CNTL REG32(0xE000F008u)
#define STK_CMPLR REG32(0xE000F010u)
#define STK_STE (1u << 0)
#define STK_STCLK_HCLK (1u << 2)

#endif
