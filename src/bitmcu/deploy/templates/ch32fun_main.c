/* main.c - a ch32fun project (https://github.com/cnlohr/ch32fun) around the bitmcu engine:
 * classify the embedded test images, print each prediction, its label and its cycles (SysTick
 * at the core clock) on USART1 TX (PD5, 115200 8N1), blink LED_PIN after each inference, print a
 * summary line, and start again after a second.
 *
 * Build and flash with a WCH-LinkE: make flash (CH32FUN: your checkout's ch32fun folder).
 * Read the output with a USB-serial adapter on PD5: e.g. picocom -b 115200 /dev/ttyUSB0. */
#if defined(__has_include)
#if __has_include(<stdio.h>) /* the C library ch32fun builds with (newlib's headers) */
#include <stdio.h>
#endif
#endif

#include "ch32fun.h"

#include "bitmcu.h"
#include "model.h"
#include "test_images.h"

#ifndef LED_PIN
#define LED_PIN PD0 /* -DLED_PIN=PC0 (EXTRA_CFLAGS in the Makefile) for another pin */
#endif

static int32_t arena[BITMCU_MODEL_ARENA_WORDS]; /* the engine's only RAM beside the stack */

int main(void) {
    SystemInit(); /* 48 MHz from the internal oscillator; printf on USART1 (funconfig.h) */
    funGpioInitAll();
    funPinMode(LED_PIN, GPIO_CFGLR_OUT_10Mhz_PP);
    SysTick->CTLR = 5u; /* SysTick on, counting the core clock: cycles */
    for (;;) {
        int correct = 0, agree = 0;
        uint32_t total = 0;
        for (int i = 0; i < BITMCU_N_TEST_IMAGES; i++) {
            int32_t logits[BITMCU_MODEL_N_CLASSES];
            uint16_t pred = 0;
            const uint32_t t0 = SysTick->CNT;
            const bitmcu_status st = bitmcu_run(&bitmcu_model_data, bitmcu_test_images[i], arena,
                                                BITMCU_MODEL_ARENA_WORDS, logits, &pred);
            const uint32_t cycles = SysTick->CNT - t0;
            if (st != BITMCU_OK) {
                printf("image %d: %s\r\n", i, bitmcu_status_name((uint32_t)st));
                continue;
            }
            total += cycles;
            correct += pred == bitmcu_test_labels[i];
            agree += pred == bitmcu_test_expected[i];
            printf("image %d: predicted %u, label %u, %lu cycles\r\n", i, (unsigned)pred,
                   (unsigned)bitmcu_test_labels[i], (unsigned long)cycles);
            funDigitalWrite(LED_PIN, FUN_HIGH);
            Delay_Ms(20);
            funDigitalWrite(LED_PIN, FUN_LOW);
        }
        printf("%d/%d correct, %d/%d equal to the reference, %lu cycles per inference\r\n",
               correct, BITMCU_N_TEST_IMAGES, agree, BITMCU_N_TEST_IMAGES,
               (unsigned long)(total / BITMCU_N_TEST_IMAGES));
        Delay_Ms(1000);
    }
}
