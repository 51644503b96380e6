/* funconfig.h - ch32fun's configuration for this project (the full list: ch32fun/ch32fun.h). */
#ifndef _FUNCONFIG_H
#define _FUNCONFIG_H

#define FUNCONF_USE_DEBUGPRINTF 0
#define FUNCONF_USE_UARTPRINTF 1     /* printf on USART1 TX, PD5 */
#define FUNCONF_UART_PRINTF_BAUD 115200
#define FUNCONF_SYSTICK_USE_HCLK 1   /* SysTick at the core clock: cycles, as bitmcu profile counts them */

#endif
