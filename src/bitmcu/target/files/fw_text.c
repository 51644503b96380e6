/* fw_text.c - bitmcu firmware for text models: generate one line for each embedded seed, token
 * by token, storing each sampled token (its END too) to the word bitmcu_tokens (the profiler
 * reads them back), as a display or a UART would receive them. Marker events: 1 = line start
 * (arg: index), 2 = layer start (arg: layer), 3 = line end (arg: tokens sampled, 0x800000 | the
 * bitmcu_status on an error), 4 = done (written by startup.S). */
#include "bitmcu.h"
#include "model.h"
#include "test_lines.h"

volatile uint32_t bitmcu_marker;
volatile uint32_t bitmcu_tokens;
static int32_t arena[BITMCU_MODEL_ARENA_WORDS];

int main(void) {
    int bad = 0;
    for (uint32_t i = 0; i < BITMCU_N_LINES; i++) {
        uint32_t rng = bitmcu_seed_state(bitmcu_line_seeds[i]);
        bitmcu_marker = (1u << 24) | i;
        bitmcu_status st = bitmcu_text_begin(&bitmcu_model_data, arena, BITMCU_MODEL_ARENA_WORDS);
        uint16_t token = 0;
        uint32_t n = 0;
        while (st == BITMCU_OK && n < BITMCU_MODEL_MAX_CHARS) {
            st = bitmcu_text_step(&bitmcu_model_data, token, &rng, arena,
                                  BITMCU_MODEL_ARENA_WORDS, &token);
            if (st != BITMCU_OK) {
                break;
            }
            bitmcu_tokens = token;
            n++;
            if (token == 0u) {
                break;
            }
        }
        bitmcu_marker = (3u << 24) | (st == BITMCU_OK ? n : 0x800000u | (uint32_t)st);
        bad += (st != BITMCU_OK);
    }
    return bad;
}
