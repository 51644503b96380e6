/* fw_gen.c - bitmcu firmware for decoders: generate an image for each embedded (seed, class)
 * pair and hand its pixels, band by band, to the word bitmcu_pixels (one store per pixel; the
 * profiler reads them back), as a display driver would receive them; print each sample's class
 * and cycles on USART1 (board.c: PD5, 115200 8N1) and toggle the LED. Marker events: 1 = image
 * start (arg: index), 2 = layer start (arg: layer), 3 = image end (arg: class, 0x800000 | the
 * bitmcu_status on an error), 4 = done (written by startup.S). */
#include "bitmcu.h"
#include "board.h"
#include "model.h"
#include "test_samples.h"

volatile uint32_t bitmcu_marker;
volatile uint32_t bitmcu_pixels;
static int32_t arena[BITMCU_MODEL_ARENA_WORDS];

static void emit(void *ctx, const uint8_t *rows, uint16_t y0, uint16_t n_rows, uint16_t width) {
    (void)ctx;
    (void)y0;
    const uint32_t n = (uint32_t)n_rows * width;
    for (uint32_t i = 0; i < n; i++) {
        bitmcu_pixels = rows[i];
    }
}

int main(void) {
    board_init();
    uint32_t bad = 0;
    for (uint32_t i = 0; i < BITMCU_N_SAMPLES; i++) {
        int8_t z[BITMCU_MODEL_LATENT];
        uint32_t state = bitmcu_seed_state(bitmcu_sample_seeds[i]);
        const uint32_t t0 = board_cycles();
        bitmcu_marker = (1u << 24) | i;
        BITMCU_MODEL_SAMPLE(&state, z, bitmcu_sample_classes[i]);
        const bitmcu_status st = bitmcu_generate(&bitmcu_model_data, z, bitmcu_sample_classes[i],
                                                 arena, BITMCU_MODEL_ARENA_WORDS, emit, 0);
        bitmcu_marker = (3u << 24) | (st == BITMCU_OK ? bitmcu_sample_classes[i] : 0x800000u | (uint32_t)st);
        const uint32_t cycles = board_cycles() - t0;
        board_led_toggle();
        if (st != BITMCU_OK) {
            bad++;
            board_print("sample %: error %\r\n", i, (uint32_t)st, 0, 0, 0);
            continue;
        }
        board_print("sample %: class %, % cycles\r\n", i, bitmcu_sample_classes[i], cycles, 0, 0);
    }
    board_print("done: % samples, % errors\r\n", BITMCU_N_SAMPLES, bad, 0, 0, 0);
    return (int)bad;
}
