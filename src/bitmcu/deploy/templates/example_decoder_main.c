/* main.c - example: generate the embedded (seed, class) samples with the bitmcu engine and
 * draw them as text. Build on a PC:  cc -std=c99 -O2 main.c bitmcu.c -o example && ./example
 * Exit status 0 when every image equals the numpy reference's (FNV-1a checksums).
 */
#include <stdio.h>

#include "bitmcu.h"
#include "model.h"
#include "test_samples.h"

#define SIDE BITMCU_MODEL_OUTPUT_SIDE
static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
static uint8_t image[SIDE * SIDE];

static void put_rows(void *ctx, const uint8_t *rows, uint16_t y0, uint16_t n_rows,
                     uint16_t width) {
    (void)ctx;
    for (uint32_t i = 0; i < (uint32_t)n_rows * width; i++) {
        image[(uint32_t)y0 * width + i] = rows[i];
    }
}

int main(void) {
    int agree = 0;
    for (int i = 0; i < BITMCU_N_SAMPLES; i++) {
        int8_t z[BITMCU_MODEL_LATENT];
        uint32_t state = bitmcu_seed_state(bitmcu_sample_seeds[i]);
        BITMCU_MODEL_SAMPLE(&state, z, bitmcu_sample_classes[i]);
        bitmcu_status st = bitmcu_generate(&bitmcu_model_data, z, bitmcu_sample_classes[i], arena,
                                           BITMCU_MODEL_ARENA_WORDS, put_rows, NULL);
        if (st != BITMCU_OK) {
            printf("sample %d: bitmcu_generate failed with status %d\n", i, (int)st);
            return 2;
        }
        uint32_t h = 0x811C9DC5u;
        for (int p = 0; p < SIDE * SIDE; p++) {
            h = (h ^ image[p]) * 0x01000193u;
        }
        agree += h == bitmcu_sample_expected[i];
        printf("sample %d: seed %u, class %u\n", i, (unsigned)bitmcu_sample_seeds[i],
               (unsigned)bitmcu_sample_classes[i]);
        for (int y = 0; y < SIDE; y++) {
            for (int x = 0; x < SIDE; x++) {
                putchar(" .:-=+*#%@"[image[y * SIDE + x] * 10 / 256]);
            }
            putchar('\n');
        }
    }
    printf("%d/%d images equal to the reference\n", agree, BITMCU_N_SAMPLES);
    return agree == BITMCU_N_SAMPLES ? 0 : 1;
}
