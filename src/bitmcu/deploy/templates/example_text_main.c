/* main.c - example: generate one line of text for each embedded seed with the bitmcu engine,
 * token by token, and print it. Build on a PC:  cc -std=c99 -O2 main.c bitmcu.c -o example
 * Exit status 0 when every line equals the numpy reference's.
 */
#include <stdio.h>
#include <string.h>

#include "bitmcu.h"
#include "model.h"
#include "test_lines.h"

static int32_t arena[BITMCU_MODEL_ARENA_WORDS];

int main(void) {
    /* token i's character, UTF-8 (token 0: the end of a line) */
    static const char *const chars[BITMCU_MODEL_N_CLASSES] = BITMCU_MODEL_TOKENS;
    int agree = 0;
    for (int i = 0; i < BITMCU_N_LINES; i++) {
        uint8_t tokens[BITMCU_MODEL_MAX_CHARS];
        char line[4 * BITMCU_MODEL_MAX_CHARS + 1]; /* UTF-8: at most 4 bytes a character */
        uint16_t n = 0;
        uint32_t state = bitmcu_seed_state(bitmcu_line_seeds[i]);
        bitmcu_status st = bitmcu_generate_text(&bitmcu_model_data, &state, tokens,
                                                BITMCU_MODEL_MAX_CHARS, &n, arena,
                                                BITMCU_MODEL_ARENA_WORDS);
        if (st != BITMCU_OK) {
            printf("line %d: bitmcu_generate_text failed with status %d\n", i, (int)st);
            return 2;
        }
        line[0] = '\0';
        for (uint16_t k = 0; k < n; k++) {
            strcat(line, chars[tokens[k]]);
        }
        agree += strcmp(line, bitmcu_line_expected[i]) == 0;
        printf("seed %u: %s\n", (unsigned)bitmcu_line_seeds[i], line);
    }
    printf("%d/%d lines equal to the reference\n", agree, BITMCU_N_LINES);
    return agree == BITMCU_N_LINES ? 0 : 1;
}
