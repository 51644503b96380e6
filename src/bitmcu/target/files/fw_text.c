/* fw_text.c - bitmcu firmware for text models: generate one line for each embedded seed, token
 * by token, storing each sampled token (its END too) to the word bitmcu_tokens (the profiler
 * reads them back); print each line and its cycles on USART1 (board.c: PD5, 115200 8N1) and
 * toggle the LED. Marker events: 1 = line start (arg: index), 2 = layer start (arg: layer),
 * 3 = line end (arg: tokens sampled, 0x800000 | the bitmcu_status on an error), 4 = done
 * (written by startup.S). */
#include "bitmcu.h"
#include "board.h"
#include "model.h"
#include "test_lines.h"

volatile uint32_t bitmcu_marker;
volatile uint32_t bitmcu_tokens;
static int32_t arena[BITMCU_MODEL_ARENA_WORDS];

int main(void) {
    /* token i's character, UTF-8 (token 0: the end of a line) */
    static const char *const chars[BITMCU_MODEL_N_CLASSES] = BITMCU_MODEL_TOKENS;
    board_init();
    uint32_t bad = 0;
    for (uint32_t i = 0; i < BITMCU_N_LINES; i++) {
        uint8_t line[BITMCU_MODEL_MAX_CHARS];
        uint32_t rng = bitmcu_seed_state(bitmcu_line_seeds[i]);
        const uint32_t t0 = board_cycles();
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
            line[n++] = (uint8_t)token;
            if (token == 0u) {
                break;
            }
        }
        bitmcu_marker = (3u << 24) | (st == BITMCU_OK ? n : 0x800000u | (uint32_t)st);
        const uint32_t cycles = board_cycles() - t0;
        board_led_toggle();
        if (st != BITMCU_OK) {
            bad++;
            board_print("line %: error %\r\n", i, (uint32_t)st, 0, 0, 0);
            continue;
        }
        board_print("line %: ", i, 0, 0, 0, 0);
        for (uint32_t k = 0; k < n && line[k] != 0u; k++) {
            board_puts(chars[line[k]]);
        }
        board_print(", % cycles\r\n", cycles, 0, 0, 0, 0);
    }
    board_print("done: % lines, % errors\r\n", BITMCU_N_LINES, bad, 0, 0, 0);
    return (int)bad;
}
