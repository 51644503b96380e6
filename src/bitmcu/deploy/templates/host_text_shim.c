#include "bitmcu.h"
#include "model.h"

/* n lines, line i from the PRNG state of seeds[i]: per step its sampled token
 * (tokens[i * steps + t], up to and with END; the first n_prefix replaced by prefix's) and its
 * logits (logits[(i * steps + t) * V ..]); the rest stays as the caller left it (zeros).
 * Returns 0 or -status. */
int bitmcu_host_text_batch(const uint32_t *seeds, int32_t n, int32_t steps,
                           const int32_t *prefix, int32_t n_prefix, int32_t *tokens,
                           int32_t *logits);
int bitmcu_host_text_batch(const uint32_t *seeds, int32_t n, int32_t steps,
                           const int32_t *prefix, int32_t n_prefix, int32_t *tokens,
                           int32_t *logits) {
    static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
    const size_t v = BITMCU_MODEL_N_CLASSES;
    for (int32_t i = 0; i < n; i++) {
        uint32_t rng = bitmcu_seed_state(seeds[i]);
        bitmcu_status st = bitmcu_text_begin(&bitmcu_model_data, arena, BITMCU_MODEL_ARENA_WORDS);
        uint16_t token = 0;
        for (int32_t t = 0; st == BITMCU_OK && t < steps; t++) {
            st = bitmcu_text_step(&bitmcu_model_data, token, &rng, arena,
                                  BITMCU_MODEL_ARENA_WORDS, &token);
            if (t < n_prefix) {
                token = (uint16_t)prefix[t];
            }
            const size_t at = (size_t)i * (size_t)steps + (size_t)t;
            for (size_t k = 0; k < v; k++) {
                logits[at * v + k] = arena[k];
            }
            tokens[at] = token;
            if (token == 0u) {
                break;
            }
        }
        if (st != BITMCU_OK) {
            return -(int)st;
        }
    }
    return 0;
}

/* Teacher forcing: n lines of `steps` given tokens each (tokens[i * steps + t], END first);
 * the logits of every step (logits[(i * steps + t) * V ..]). The sampler draws too (from a
 * fixed state); its tokens are not used. Returns 0 or -status. */
int bitmcu_host_text_forced(const int32_t *tokens, int32_t n, int32_t steps, int32_t *logits);
int bitmcu_host_text_forced(const int32_t *tokens, int32_t n, int32_t steps, int32_t *logits) {
    static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
    const size_t v = BITMCU_MODEL_N_CLASSES;
    for (int32_t i = 0; i < n; i++) {
        uint32_t rng = bitmcu_seed_state(0u);
        bitmcu_status st = bitmcu_text_begin(&bitmcu_model_data, arena, BITMCU_MODEL_ARENA_WORDS);
        for (int32_t t = 0; st == BITMCU_OK && t < steps; t++) {
            const size_t at = (size_t)i * (size_t)steps + (size_t)t;
            uint16_t next;
            st = bitmcu_text_step(&bitmcu_model_data, (uint16_t)tokens[at], &rng, arena,
                                  BITMCU_MODEL_ARENA_WORDS, &next);
            for (size_t k = 0; k < v; k++) {
                logits[at * v + k] = arena[k];
            }
        }
        if (st != BITMCU_OK) {
            return -(int)st;
        }
    }
    return 0;
}
