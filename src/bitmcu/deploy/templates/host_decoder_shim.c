#include <string.h>

#include "bitmcu.h"
#include "model.h"

#define SIDE BITMCU_MODEL_OUTPUT_SIDE
typedef struct { uint8_t *image; } target;

static void put_rows(void *ctx, const uint8_t *rows, uint16_t y0, uint16_t n_rows,
                     uint16_t width) {
    memcpy(((target *)ctx)->image + (size_t)y0 * width, rows, (size_t)n_rows * width);
}

/* n images, each from seed[i] (latent sampled by the engine) and class[i]; writes
 * n * SIDE * SIDE pixels and n * latent latent values. Returns 0 or -status. */
int bitmcu_host_generate_batch(const uint32_t *seeds, const uint16_t *classes, int32_t n,
                               uint8_t *images, int8_t *latents);
int bitmcu_host_generate_batch(const uint32_t *seeds, const uint16_t *classes, int32_t n,
                               uint8_t *images, int8_t *latents) {
    static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
    for (int32_t i = 0; i < n; i++) {
        uint32_t state = bitmcu_seed_state(seeds[i]);
        int8_t *z = latents + (size_t)i * BITMCU_MODEL_LATENT;
        BITMCU_MODEL_SAMPLE(&state, z, classes[i]);
        target t = {images + (size_t)i * SIDE * SIDE};
        bitmcu_status st = bitmcu_generate(&bitmcu_model_data, z, classes[i], arena,
                                           BITMCU_MODEL_ARENA_WORDS, put_rows, &t);
        if (st != BITMCU_OK) {
            return -(int)st;
        }
    }
    return 0;
}
