/* fuzz_table.c - mutate a model table's fields and check that the engine never misbehaves.
 *
 * Built with AddressSanitizer and UndefinedBehaviorSanitizer beside bitmcu.c and a model.h (by
 * bitmcu/deploy/fuzz.py). Each trial copies the table, changes one to three fields (numbers:
 * +-1, 0, random, a flipped bit, doubled; pointers: NULL, kernels and front ends: another one;
 * the end marker too, together with n_layers or not), calls bitmcu_check with the array's
 * compiled length (the bound no mutation of the table can move) and, when the table checks OK,
 * runs it. Any out-of-bounds read or undefined behaviour aborts the program (the sanitizers);
 * otherwise it prints one JSON object:
 *   {"trials": N, "status": [count per bitmcu_status], "ran": R, "changed": C,
 *    "neutral_changed": X, "bad_emit": E}
 * ran: tables that checked OK and were run; changed: of those, runs whose output differs from
 * the unmutated table's; neutral_changed: of those, runs in which only fields that cannot change
 * the output were mutated (must be 0); bad_emit: decoder bands outside the image (must be 0).
 * A classifier's output: its logits; a decoder's: its image; a text model's: a line's tokens.
 * A decoder with a mixture prior: its mixture's fields are mutated too (counts, tables, sum),
 * bitmcu_check_mixture checks them with the arrays' compiled length, and the run samples from
 * the mutated mixture, for every class.
 *
 * usage: fuzz_table TRIALS SEED SUMS   (SUMS 1: bitmcu_check with BITMCU_CHECK_SUMS) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmcu.h"
#include "model.h"

#define N_LAYERS BITMCU_MODEL_N_LAYERS
#define N_MODEL_FIELDS 19u /* 16 numbers, 2 sums, layers */
#define N_LAYER_FIELDS 13u /* 10 numbers, weights, kernel, step */

#ifdef BITMCU_MODEL_LATENT /* a decoder */
#define OUT_BYTES (BITMCU_MODEL_OUTPUT_SIDE * BITMCU_MODEL_OUTPUT_SIDE)
#elif defined(BITMCU_MODEL_MAX_CHARS) /* a text model: a line's tokens and its length */
#define OUT_BYTES (BITMCU_MODEL_MAX_CHARS + 2)
#else
#define OUT_BYTES (BITMCU_MODEL_N_CLASSES * 4)
#endif

static bitmcu_model model;
static bitmcu_layer layers[N_LAYERS + 1];
static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
static uint8_t out[OUT_BYTES];
static uint32_t bad_emit;

static const bitmcu_kernel kernels[9] = {NULL, bitmcu_fc_binary, bitmcu_fc_ternary,
                                         bitmcu_fc_2bitsym, bitmcu_fc_4bitsym, bitmcu_fc_4bit,
                                         bitmcu_fc_fp130, bitmcu_fc_nf4, bitmcu_fc_8bit};
static const bitmcu_step_fn steps[9] = {NULL, bitmcu_step_fc, bitmcu_step_fc_requant,
                                        bitmcu_step_stages, bitmcu_front_end,
                                        bitmcu_front_end_8bit, bitmcu_step_embed,
                                        bitmcu_step_cell, bitmcu_step_sample};

static uint32_t rnd(uint32_t *s) { return bitmcu_xorshift32(s); }

#ifdef BITMCU_MODEL_MIXTURE
#define N_MIX_FIELDS 7u /* 3 counts, 3 tables, sum */
static bitmcu_mixture mix;
#else
#define N_MIX_FIELDS 0u
#endif

static uint32_t new_value(uint32_t v, uint32_t *s) {
    const uint32_t r = rnd(s), r2 = rnd(s);
    switch (r % 8u) {
    case 0: return v + 1u;
    case 1: return v - 1u;
    case 2: return 0u;
    case 3: return r2 & 0xFFu;
    case 4: return r2 & 0xFFFFu;
    case 5: return r2;
    case 6: return v ^ (1u << (r2 % 32u));
    default: return v * 2u;
    }
}

/* Mutate model field f; returns 1 when the field cannot change the output (sums, hash). */
static int mutate_model(uint32_t f, uint32_t *s) {
    bitmcu_model *m = &model;
#define SET(field, type) m->field = (type)new_value(m->field, s)
    switch (f) {
    case 0: SET(magic, uint32_t); return 0;
    case 1: SET(version, uint16_t); return 0;
    case 2: SET(n_layers, uint16_t); return 0;
    case 3: SET(config_hash, uint32_t); return 1;
    case 4: SET(n_input, uint16_t); return 0;
    case 5: SET(n_classes, uint16_t); return 0;
    case 6: SET(max_out, uint16_t); return 0;
    case 7: SET(max_in, uint16_t); return 0;
    case 8: SET(n_features, uint16_t); return 0;
    case 9: SET(nz_at, uint16_t); return 0;
    case 10: SET(feat_at, uint16_t); return 0;
    case 11: SET(act_max, uint8_t); return 0;
    case 12: SET(n_front, uint8_t); return 0;
    case 13: SET(bias_unit, uint8_t); return 0;
    case 14: SET(kind, uint8_t); return 0;
    case 15: SET(arena_words, uint32_t); return 0;
    case 16: SET(table_sum, uint32_t); return 1;
    case 17: SET(weight_sum, uint32_t); return 1;
    default: m->layers = NULL; return 0;
    }
#undef SET
}

static int mutate_layer(bitmcu_layer *L, uint32_t f, uint32_t *s) {
#define SET(field, type) L->field = (type)new_value(L->field, s)
    switch (f) {
    /* the op's parameters through bitmcu_fc: every op's six numbers lie where its fields do */
    case 0: SET(op, uint8_t); return 0;
    case 1: SET(scheme, uint8_t); return 0;
    case 2: SET(p.fc.relu, uint8_t); return 0;
    case 3: SET(p.fc.shift, uint8_t); return 0;
    case 4: SET(p.fc.n_in, uint16_t); return 0;
    case 5: SET(p.fc.n_out, uint16_t); return 0;
    case 6: SET(p.fc.row_bytes, uint16_t); return 0;
    case 7: SET(p.fc.chunk, uint16_t); return 0;
    case 8: SET(buf, uint16_t); return 0;
    case 9: SET(nbytes, uint32_t); return 0;
    case 10: L->weights = NULL; return 0;
    case 11: L->kernel = kernels[rnd(s) % 9u]; return 0;
    default: L->step = steps[rnd(s) % 9u]; return 0;
    }
#undef SET
}

#ifdef BITMCU_MODEL_MIXTURE
/* Mutate the mixture's field f; returns 1 when it cannot change the output (the sum). */
static int mutate_mixture(uint32_t f, uint32_t *s) {
#define SET(field, type) mix.field = (type)new_value(mix.field, s)
    switch (f) {
    case 0: SET(n_classes, uint16_t); return 0;
    case 1: SET(components, uint16_t); return 0;
    case 2: SET(latent, uint16_t); return 0;
    case 3: mix.cum = NULL; return 0;
    case 4: mix.centre = NULL; return 0;
    case 5: mix.spread = NULL; return 0;
    default: SET(sum, uint32_t); return 1;
    }
#undef SET
}
#endif

#ifdef BITMCU_MODEL_LATENT /* a decoder */
static void emit(void *ctx, const uint8_t *rows, uint16_t y0, uint16_t n_rows, uint16_t width) {
    (void)ctx;
    if (width != BITMCU_MODEL_OUTPUT_SIDE || (uint32_t)y0 + n_rows > BITMCU_MODEL_OUTPUT_SIDE) {
        bad_emit++;
        return;
    }
    memcpy(out + (size_t)y0 * width, rows, (size_t)n_rows * width);
}

#ifdef BITMCU_MODEL_MIXTURE
static bitmcu_status run_model(void) { /* every class's tables are read (the last image kept) */
    int8_t z[BITMCU_MODEL_LATENT];
    bitmcu_status st = BITMCU_OK;
    for (uint16_t c = 0; c < BITMCU_MODEL_N_CLASSES && st == BITMCU_OK; c++) {
        uint32_t state = bitmcu_seed_state(1u + c);
        bitmcu_sample_mixture(&state, z, c, &mix);
        st = bitmcu_generate(&model, z, c, arena, BITMCU_MODEL_ARENA_WORDS, emit, NULL);
    }
    return st;
}
#else
static bitmcu_status run_model(void) {
    int8_t z[BITMCU_MODEL_LATENT];
    uint32_t state = bitmcu_seed_state(1u);
    BITMCU_MODEL_SAMPLE(&state, z, 0u);
    return bitmcu_generate(&model, z, 0u, arena, BITMCU_MODEL_ARENA_WORDS, emit, NULL);
}
#endif
#elif defined(BITMCU_MODEL_MAX_CHARS)
static bitmcu_status run_model(void) {
    uint32_t state = bitmcu_seed_state(1u);
    uint16_t n = 0;
    const bitmcu_status st = bitmcu_generate_text(&model, &state, out, BITMCU_MODEL_MAX_CHARS,
                                                  &n, arena, BITMCU_MODEL_ARENA_WORDS);
    memcpy(out + BITMCU_MODEL_MAX_CHARS, &n, 2);
    return st;
}
#else
static uint8_t image[BITMCU_MODEL_N_INPUT];

static bitmcu_status run_model(void) {
    int32_t logits[BITMCU_MODEL_N_CLASSES];
    const bitmcu_status st = bitmcu_run(&model, image, arena, BITMCU_MODEL_ARENA_WORDS, logits,
                                        NULL);
    memcpy(out, logits, sizeof logits);
    return st;
}
#endif

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: fuzz_table TRIALS SEED SUMS\n");
        return 2;
    }
    const long trials = atol(argv[1]);
    uint32_t s = bitmcu_seed_state((uint32_t)atol(argv[2]));
    const uint32_t flags = atoi(argv[3]) ? BITMCU_CHECK_SUMS : 0u;
#if !defined(BITMCU_MODEL_LATENT) && !defined(BITMCU_MODEL_MAX_CHARS)
    for (uint32_t i = 0; i < BITMCU_MODEL_N_INPUT; i++) {
        image[i] = (uint8_t)(rnd(&s) >> 24);
    }
#endif
    static uint8_t want[OUT_BYTES];
    model = bitmcu_model_data;
    memcpy(layers, bitmcu_layers, sizeof layers);
    model.layers = layers;
#ifdef BITMCU_MODEL_MIXTURE
    mix = *BITMCU_MODEL_MIXTURE;
    if (bitmcu_check_mixture(&model, &mix, BITMCU_MODEL_MIXTURE_ENTRIES, BITMCU_CHECK_SUMS) !=
        BITMCU_OK) {
        fprintf(stderr, "the unmutated mixture does not check\n");
        return 3;
    }
#endif
    if (bitmcu_check(&model, N_LAYERS + 1u, BITMCU_CHECK_SUMS) != BITMCU_OK ||
        run_model() != BITMCU_OK) {
        fprintf(stderr, "the unmutated table does not check or run\n");
        return 3;
    }
    memcpy(want, out, sizeof want);
    unsigned long status[BITMCU_N_STATUS + 1] = {0}, ran = 0, changed = 0, neutral_changed = 0;
    for (long t = 0; t < trials; t++) {
        model = bitmcu_model_data;
        memcpy(layers, bitmcu_layers, sizeof layers);
        model.layers = layers;
#ifdef BITMCU_MODEL_MIXTURE
        mix = *BITMCU_MODEL_MIXTURE;
#endif
        const uint32_t n_mut = 1u + rnd(&s) % 3u;
        int neutral = 1;
        for (uint32_t k = 0; k < n_mut; k++) {
            const uint32_t which = rnd(&s) % (N_MODEL_FIELDS + N_MIX_FIELDS +
                                              (N_LAYERS + 1u) * N_LAYER_FIELDS);
            if (which < N_MODEL_FIELDS) {
                neutral &= mutate_model(which, &s);
#ifdef BITMCU_MODEL_MIXTURE
            } else if (which < N_MODEL_FIELDS + N_MIX_FIELDS) {
                neutral &= mutate_mixture(which - N_MODEL_FIELDS, &s);
#endif
            } else {
                const uint32_t i = which - N_MODEL_FIELDS - N_MIX_FIELDS;
                neutral &= mutate_layer(&layers[i / N_LAYER_FIELDS], i % N_LAYER_FIELDS, &s);
            }
        }
        bitmcu_status st = bitmcu_check(&model, N_LAYERS + 1u, flags);
#ifdef BITMCU_MODEL_MIXTURE
        if (st == BITMCU_OK) {
            st = bitmcu_check_mixture(&model, &mix, BITMCU_MODEL_MIXTURE_ENTRIES, flags);
        }
#endif
        status[st < BITMCU_N_STATUS ? st : BITMCU_N_STATUS]++;
        if (st != BITMCU_OK) {
            continue;
        }
        memset(out, 0, sizeof out);
        const bitmcu_status rs = run_model();
        ran++;
        if (rs != BITMCU_OK || memcmp(out, want, sizeof want) != 0) {
            changed++;
            neutral_changed += (unsigned long)neutral;
        }
    }
    printf("{\"trials\": %ld, \"status\": [", trials);
    for (uint32_t i = 0; i <= BITMCU_N_STATUS; i++) {
        printf("%s%lu", i ? ", " : "", status[i]);
    }
    printf("], \"ran\": %lu, \"changed\": %lu, \"neutral_changed\": %lu, \"bad_emit\": %u}\n",
           ran, changed, neutral_changed, bad_emit);
    return 0;
}
