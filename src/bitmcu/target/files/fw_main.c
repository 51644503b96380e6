/* fw_main.c - bitmcu firmware: classify the embedded test images, print each prediction, its
 * label and its cycles on USART1 (board.c: PD5, 115200 8N1), toggle the LED, and report through
 * the marker word (bitmcu_marker), which the profiler watches. On a chip the marker is a plain
 * RAM word. Events: 1 = image start (arg: index), 2 = layer start (arg: layer), 3 = image end
 * (arg: prediction, or 0x800000 | the bitmcu_status of a failed run), 4 = done (written by
 * startup.S). */
#include "bitmcu.h"
#include "board.h"
#include "model.h"
#include "test_images.h"

volatile uint32_t bitmcu_marker;
static int32_t arena[BITMCU_MODEL_ARENA_WORDS];

int main(void) {
    board_init();
    uint32_t bad = 0;
    for (uint32_t i = 0; i < BITMCU_N_TEST_IMAGES; i++) {
        int32_t logits[BITMCU_MODEL_N_CLASSES];
        uint16_t pred = 0;
        const uint32_t t0 = board_cycles();
        bitmcu_marker = (1u << 24) | i;
        bitmcu_status st = bitmcu_run(&bitmcu_model_data, bitmcu_test_images[i], arena,
                                      BITMCU_MODEL_ARENA_WORDS, logits, &pred);
        bitmcu_marker = (3u << 24) | (st == BITMCU_OK ? pred : 0x800000u | (uint32_t)st);
        const uint32_t cycles = board_cycles() - t0;
        board_led_toggle();
        bad += st != BITMCU_OK;
        board_print("image %: prediction %, label %, % cycles, status %\r\n", i, pred,
                    bitmcu_test_labels[i], cycles, (uint32_t)st);
    }
    board_print("done: % images, % errors\r\n", BITMCU_N_TEST_IMAGES, bad, 0, 0, 0);
    return (int)bad;
}
