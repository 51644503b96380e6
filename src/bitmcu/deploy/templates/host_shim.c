#include "bitmcu.h"
#include "model.h"

/* Run n images (n_input bytes each); write n * n_classes logits. Returns 0 or -status. */
int bitmcu_host_run_batch(const uint8_t *images, int32_t n, int32_t *logits);
int bitmcu_host_run_batch(const uint8_t *images, int32_t n, int32_t *logits) {
    static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
    for (int32_t i = 0; i < n; i++) {
        bitmcu_status st = bitmcu_run(&bitmcu_model_data,
                                      images + (size_t)i * BITMCU_MODEL_N_INPUT, arena,
                                      BITMCU_MODEL_ARENA_WORDS,
                                      logits + (size_t)i * BITMCU_MODEL_N_CLASSES, NULL);
        if (st != BITMCU_OK) {
            return -(int)st;
        }
    }
    return 0;
}
