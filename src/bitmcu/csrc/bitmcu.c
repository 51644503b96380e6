/* bitmcu.c - integer inference engine. See bitmcu.h; mirrored by bitmcu/reference.py.
 *
 * Data flow of bitmcu_run:
 *   pixels (uint8) --shiftnorm--> nonzero list --fc kernel--> int32 acc --shiftnorm+relu-->
 *   nonzero list --fc kernel--> ... --> int32 logits --> argmax
 *
 * Arena layout (int32 words): [0, max_out) accumulators, then the nonzero activation list as
 * bytes (delta-index, value) pairs, max_in of them at most. The list is only ever accessed
 * through uint8_t pointers, which may alias the int32 arena.
 */
#include "bitmcu.h"

/* ------------------------------------------------------------------------------------------ */
/* arithmetic helpers                                                                         */

/* c * x for an unsigned `bits`-bit code c and activation x (0..255). */
static inline uint32_t umul_code(uint32_t c, uint32_t x, unsigned bits) {
#if BITMCU_HAS_MUL
    (void)bits;
    return c * x;
#else
    uint32_t s = 0;
    for (unsigned b = 0; b < bits; b++) {
        s += (x << b) & (0u - ((c >> b) & 1u));
    }
    return s;
#endif
}

/* v when s == 0, -v when s == 1 (branch-free). */
static inline int32_t cond_neg(int32_t v, uint32_t s) {
    return (int32_t)(((uint32_t)v ^ (0u - s)) + s);
}

/* Code i of a row packed `bits` bits per code, LSB-first within each byte. */
static inline uint32_t code_at(const uint8_t *row, uint32_t i, unsigned bits) {
    const unsigned per_byte_log2 = bits == 1u ? 3u : bits == 2u ? 2u : bits == 4u ? 1u : 0u;
    const uint32_t shift = (i & ((1u << per_byte_log2) - 1u)) * bits;
    return ((uint32_t)row[i >> per_byte_log2] >> shift) & ((1u << bits) - 1u);
}

/* Sum over the nonzero activations of code * x, for codes of `bits` bits. */
static inline int32_t dot_codes(const uint8_t *row, const bitmcu_act *a, unsigned bits) {
    const uint8_t *p = a->nz, *end = a->nz + 2u * a->n_nz;
    uint32_t i = 0, s = 0;
    for (; p != end; p += 2) {
        i += p[0];
        s += umul_code(code_at(row, i, bits), p[1], bits);
    }
    return (int32_t)s;
}

/* Loop header shared by the kernels that decode each code themselves: walks the nonzero list
 * of `a` with index `i` and value `x`. */
#define BITMCU_FOR_NZ(a, i, x)                                                   \
    for (const uint8_t *p_ = (a)->nz, *e_ = (a)->nz + 2u * (a)->n_nz;          \
         p_ != e_ && ((i) += p_[0], (x) = p_[1], 1); p_ += 2)

/* ------------------------------------------------------------------------------------------ */
/* kernels: one per scheme; acc[o] = sum_i level(o, i) * x[i]                                  */

/* binary: level = 2c - 1 */
BITMCU_HOT(bitmcu_fc_binary) void bitmcu_fc_binary(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->n_out; o++, row += L->row_bytes) {
        acc[o] = 2 * dot_codes(row, a, 1) - a->sum;
    }
}

/* 2bitsym: level = 2c - 3 */
BITMCU_HOT(bitmcu_fc_2bitsym) void bitmcu_fc_2bitsym(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->n_out; o++, row += L->row_bytes) {
        acc[o] = 2 * dot_codes(row, a, 2) - 3 * a->sum;
    }
}

/* 4bitsym: level = 2c - 15 */
BITMCU_HOT(bitmcu_fc_4bitsym) void bitmcu_fc_4bitsym(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->n_out; o++, row += L->row_bytes) {
        acc[o] = 2 * dot_codes(row, a, 4) - 15 * a->sum;
    }
}

/* 4bit: ones' complement, code = sign << 3 | magnitude */
BITMCU_HOT(bitmcu_fc_4bit) void bitmcu_fc_4bit(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->n_out; o++, row += L->row_bytes) {
        int32_t s = 0;
        uint32_t i = 0, x = 0;
        BITMCU_FOR_NZ(a, i, x) {
            const uint32_t c = code_at(row, i, 4);
            s += cond_neg((int32_t)umul_code(c & 7u, x, 3), c >> 3);
        }
        acc[o] = s;
    }
}

/* fp130: code = sign << 3 | exponent, level = +-(1 << exponent): shifts only */
BITMCU_HOT(bitmcu_fc_fp130) void bitmcu_fc_fp130(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->n_out; o++, row += L->row_bytes) {
        int32_t s = 0;
        uint32_t i = 0, x = 0;
        BITMCU_FOR_NZ(a, i, x) {
            const uint32_t c = code_at(row, i, 4);
            s += cond_neg((int32_t)(x << (c & 7u)), c >> 3);
        }
        acc[o] = s;
    }
}

/* nf4: level = table[code]; magnitudes and signs of the NormalFloat4 levels (x127) */
static const uint8_t nf4_mag[16] = {127, 88, 67, 50, 36, 23, 12, 0, 10, 20, 31, 43, 56, 71, 92, 127};

BITMCU_HOT(bitmcu_fc_nf4) void bitmcu_fc_nf4(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->n_out; o++, row += L->row_bytes) {
        int32_t s = 0;
        uint32_t i = 0, x = 0;
        BITMCU_FOR_NZ(a, i, x) {
            const uint32_t c = code_at(row, i, 4);
            s += cond_neg((int32_t)umul_code(nf4_mag[c], x, 7), c < 7u ? 1u : 0u);
        }
        acc[o] = s;
    }
}

/* 8bit: code = int8 level */
BITMCU_HOT(bitmcu_fc_8bit) void bitmcu_fc_8bit(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->n_out; o++, row += L->row_bytes) {
        int32_t s = 0;
        uint32_t i = 0, x = 0;
        BITMCU_FOR_NZ(a, i, x) {
            const uint32_t c = row[i];
            const uint32_t neg = c >> 7;
            const uint32_t mag = neg ? 256u - c : c;
            s += cond_neg((int32_t)umul_code(mag, x, 8), neg);
        }
        acc[o] = s;
    }
}

/* ternary: 5 trits per byte in base 3 (trit = level + 1). trit5[b] holds, for byte b, the
 * positive-level mask in bits 0..4 and the negative-level mask in bits 8..12. */
static uint16_t trit_masks(uint32_t b) {
    uint32_t pos = 0, neg = 0;
    for (unsigned t = 0; t < 5u; t++) {
        /* b % 3 and b / 3 without a divider: b < 243 */
        const uint32_t q = (b * 171u) >> 9;
        const uint32_t r = b - 3u * q;
        pos |= (r == 2u ? 1u : 0u) << t;
        neg |= (r == 0u ? 1u : 0u) << t;
        b = q;
    }
    return (uint16_t)(pos | (neg << 8));
}

BITMCU_HOT(bitmcu_fc_ternary) void bitmcu_fc_ternary(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->n_out; o++, row += L->row_bytes) {
        int32_t s = 0;
        uint32_t i = 0, xu = 0;
        BITMCU_FOR_NZ(a, i, xu) {
            /* i / 5 for i < 1024 as (i * 205) >> 10, with shifts only */
            const uint32_t q = ((i << 7) + (i << 6) + (i << 3) + (i << 2) + i) >> 10;
            const uint32_t t = i - ((q << 2) + q);
            const uint32_t m = trit_masks(row[q]);
            const int32_t x = (int32_t)xu;
            s += (x & -(int32_t)((m >> t) & 1u)) - (x & -(int32_t)((m >> (t + 8u)) & 1u));
        }
        acc[o] = s;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* ShiftNorm: the integer stand-in for normalization + activation quantization                 */

/* Smallest shift s with (m >> s) <= act_max. */
static uint32_t shift_for(uint32_t m, uint32_t act_max) {
    uint32_t s = 0;
    while ((m >> s) > act_max) {
        s++;
    }
    return s;
}

/* (v + round) >> s, clamped to act_max: the one rounding rule of the engine. */
static uint32_t shift_round(uint32_t v, uint32_t s, uint32_t act_max) {
    const uint32_t r = s ? (v + (1u << (s - 1u))) >> s : v;
    return r > act_max ? act_max : r;
}

/* Append (index, value) to the nonzero list at nz; returns the new entry count. */
static uint16_t nz_push(uint8_t *nz, uint16_t k, uint32_t *prev, uint32_t i, uint32_t v) {
    while (i - *prev > 255u) {
        nz[2u * k] = 255u;
        nz[2u * k + 1u] = 0u;
        k++;
        *prev += 255u;
    }
    nz[2u * k] = (uint8_t)(i - *prev);
    nz[2u * k + 1u] = (uint8_t)v;
    *prev = i;
    return (uint16_t)(k + 1u);
}

/* Input pixels -> nonzero list. */
static void shiftnorm_input(const uint8_t *in, uint16_t n, uint32_t act_max, bitmcu_act *a,
                            uint8_t *nz) {
    uint32_t m = 0;
    for (uint16_t i = 0; i < n; i++) {
        m = in[i] > m ? in[i] : m;
    }
    const uint32_t s = shift_for(m, act_max);
    uint16_t k = 0;
    uint32_t prev = 0;
    int32_t sum = 0;
    for (uint16_t i = 0; i < n; i++) {
        const uint32_t v = shift_round(in[i], s, act_max);
        if (v) {
            k = nz_push(nz, k, &prev, i, v);
            sum += (int32_t)v;
        }
    }
    a->nz = nz;
    a->n_nz = k;
    a->sum = sum;
}

/* ReLU(acc) -> ShiftNorm -> nonzero list. */
static void shiftnorm_relu(const int32_t *acc, uint16_t n, uint32_t act_max, bitmcu_act *a,
                           uint8_t *nz) {
    uint32_t m = 0;
    for (uint16_t i = 0; i < n; i++) {
        const uint32_t v = acc[i] > 0 ? (uint32_t)acc[i] : 0u;
        m = v > m ? v : m;
    }
    const uint32_t s = shift_for(m, act_max);
    uint16_t k = 0;
    uint32_t prev = 0;
    int32_t sum = 0;
    for (uint16_t i = 0; i < n; i++) {
        const uint32_t v = acc[i] > 0 ? shift_round((uint32_t)acc[i], s, act_max) : 0u;
        if (v) {
            k = nz_push(nz, k, &prev, i, v);
            sum += (int32_t)v;
        }
    }
    a->nz = nz;
    a->n_nz = k;
    a->sum = sum;
}

/* ------------------------------------------------------------------------------------------ */
/* runner                                                                                     */

bitmcu_status bitmcu_run(const bitmcu_model *model, const uint8_t *input, int32_t *arena,
                         size_t arena_words, int32_t *logits, uint16_t *pred) {
    if (!model || !input || !arena || !logits) {
        return BITMCU_ERR_ARG;
    }
    if (model->magic != BITMCU_MAGIC) {
        return BITMCU_ERR_MAGIC;
    }
    if (model->version != BITMCU_FORMAT_VERSION) {
        return BITMCU_ERR_VERSION;
    }
    if (arena_words < model->arena_words ||
        model->arena_words < BITMCU_ARENA_WORDS(model->max_out, model->max_in)) {
        return BITMCU_ERR_ARENA;
    }
    int32_t *acc = arena;                                   /* (max_out) */
    uint8_t *nz = (uint8_t *)(arena + model->max_out);      /* (max_in, 2) */
    if (model->n_input > model->max_in || model->n_classes > model->max_out) {
        return BITMCU_ERR_LAYER;
    }
    bitmcu_act act;
    shiftnorm_input(input, model->n_input, model->act_max, &act, nz);
    const bitmcu_layer *L = model->layers;
    for (uint16_t l = 0; l < model->n_layers; l++, L++) {
        if (L->op != BITMCU_OP_FC || !L->kernel || L->n_in > model->max_in ||
            L->n_out > model->max_out) {
            return BITMCU_ERR_LAYER;
        }
        BITMCU_TRACE(2u, l);
        L->kernel(L, &act, acc);
        if (L->relu) {
            shiftnorm_relu(acc, L->n_out, model->act_max, &act, nz);
        }
    }
    uint16_t best = 0;
    for (uint16_t i = 0; i < model->n_classes; i++) {
        logits[i] = acc[i];
        best = acc[i] > acc[best] ? i : best;
    }
    if (pred) {
        *pred = best;
    }
    return BITMCU_OK;
}
