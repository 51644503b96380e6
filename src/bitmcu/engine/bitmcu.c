/* bitmcu.c - integer inference engine. See bitmcu.h; mirrored by bitmcu/deploy/reference.py.
 *
 * The model is one table of ops; bitmcu_run, bitmcu_generate and bitmcu_text_step set up its
 * input, walk the table calling each row's op function (run_ops; a macro-op, the front end or a
 * decoder's stages, runs all of its rows) and hand on its output. A classifier:
 *   pixels (uint8) [--front end--> features] --shiftnorm--> nonzero list --fc kernel--> int32
 *   acc --shiftnorm+relu--> nonzero list --fc kernel--> ... --> int32 logits --> argmax
 * A text model, once per token: token --embed--> activations --cell (its state kept)--> ...
 *   --fc kernel--> int32 logits --sample--> the next token
 *
 * Arena layout: planned at export (deploy/plan.py) and carried by the table: the accumulators
 * at 0, the nonzero activation list as bytes (delta-index, value) pairs at nz_at, then the maps
 * and rows each layer writes (its buf). The byte buffers are only ever accessed through uint8_t
 * pointers, which may alias the int32 arena.
 */
#include "bitmcu.h"

/* The three parameter structs share their layout where their meaning is shared: a stage's
 * window goes through the fc kernels as its own layer (they read n_out, row_bytes, weights),
 * and bitmcu_sums reads every op's six numbers through bitmcu_fc. (C99 has no static_assert: a negative array size fails.) */
typedef char bitmcu_params_share_their_layout[
    (offsetof(bitmcu_fc, shift) == offsetof(bitmcu_stage, shift) &&
     offsetof(bitmcu_fc, n_out) == offsetof(bitmcu_stage, rows) &&
     offsetof(bitmcu_fc, row_bytes) == offsetof(bitmcu_stage, row_bytes) &&
     offsetof(bitmcu_fc, n_out) == offsetof(bitmcu_map, channels) &&
     offsetof(bitmcu_fc, shift) == offsetof(bitmcu_cell, shift) &&
     offsetof(bitmcu_fc, n_in) == offsetof(bitmcu_cell, n_in) &&
     offsetof(bitmcu_fc, n_out) == offsetof(bitmcu_cell, n_out) &&
     offsetof(bitmcu_fc, row_bytes) == offsetof(bitmcu_cell, row_bytes) &&
     sizeof(bitmcu_fc) == sizeof(bitmcu_stage) && sizeof(bitmcu_fc) == sizeof(bitmcu_map) &&
     sizeof(bitmcu_fc) == sizeof(bitmcu_cell) && sizeof(bitmcu_fc) == sizeof(bitmcu_embed) &&
     sizeof(bitmcu_fc) == sizeof(bitmcu_sample))
        ? 1 : -1];

/* What the engine knows of each weight scheme (ids: bitmcu_scheme): `group` rows share their
 * packed bytes (rows interleaved; the step of a decoder's row chunks) and a row group of k
 * weights takes (k + per - 1) / per bytes. Numbers only: read at run time, it links no kernel
 * (bitmcu_check's scheme_kernels holds those). */
typedef struct {
    uint8_t group;
    uint8_t per;
} bitmcu_scheme_traits;
#define BITMCU_N_SCHEMES 10u
static const bitmcu_scheme_traits bitmcu_schemes[BITMCU_N_SCHEMES] = {
    [BITMCU_SCHEME_BINARY] = {.group = 8, .per = 1},          /* 8 rows of 1 bit per byte */
    [BITMCU_SCHEME_BINARY_BALANCED] = {.group = 8, .per = 1},
    [BITMCU_SCHEME_TERNARY] = {.group = 1, .per = 5},         /* 5 codes per byte (3^5 < 256) */
    [BITMCU_SCHEME_2BITSYM] = {.group = 4, .per = 1},         /* 4 rows of 2 bits per byte */
    [BITMCU_SCHEME_4BITSYM] = {.group = 2, .per = 1},         /* 2 rows of 4 bits per byte */
    [BITMCU_SCHEME_4BIT] = {.group = 1, .per = 2},            /* 2 codes of a row per byte */
    [BITMCU_SCHEME_FP130] = {.group = 1, .per = 2},
    [BITMCU_SCHEME_NF4] = {.group = 1, .per = 2},
    [BITMCU_SCHEME_8BIT] = {.group = 1, .per = 1},
};

/* Helpers of the hot kernels must be inlined into them, so that a kernel placed in SRAM runs
 * entirely from SRAM. */
#if defined(__GNUC__)
#define BITMCU_INLINE static inline __attribute__((always_inline))
#else
#define BITMCU_INLINE static inline
#endif
/* Code run once per inference, compiled for size (GCC; the flash it frees lets larger models
 * fit, at a few cycles per inference). */
#if defined(__GNUC__) && !defined(__clang__)
#define BITMCU_COLD __attribute__((optimize("Os")))
#else
#define BITMCU_COLD
#endif

/* ------------------------------------------------------------------------------------------ */
/* arithmetic helpers                                                                         */

/* All ones when bit b of c is set, else zero (two instructions: shift left, arithmetic shift
 * right; right shifts of negative values are arithmetic on every compiler we support). */
BITMCU_INLINE uint32_t bit_mask(uint32_t c, unsigned b) {
    return (uint32_t)((int32_t)(c << (31u - b)) >> 31);
}

/* c * x for an unsigned `bits`-bit code c and activation x (0..255). Without a multiplier:
 * unrolled shift-and-add over the code's bits (`bits` is a constant after inlining). */
BITMCU_INLINE uint32_t umul_code(uint32_t c, uint32_t x, unsigned bits) {
#if BITMCU_HAS_MUL
    (void)bits;
    return c * x;
#else
    uint32_t s = x & bit_mask(c, 0);
    if (bits > 1u) s += (x << 1) & bit_mask(c, 1);
    if (bits > 2u) s += (x << 2) & bit_mask(c, 2);
    if (bits > 3u) s += (x << 3) & bit_mask(c, 3);
    if (bits > 4u) s += (x << 4) & bit_mask(c, 4);
    if (bits > 5u) s += (x << 5) & bit_mask(c, 5);
    if (bits > 6u) s += (x << 6) & bit_mask(c, 6);
    if (bits > 7u) s += (x << 7) & bit_mask(c, 7);
    return s;
#endif
}

/* v when s == 0, -v when s == 1 (branch-free). */
BITMCU_INLINE int32_t cond_neg(int32_t v, uint32_t s) {
    return (int32_t)(((uint32_t)v ^ (0u - s)) + s);
}

/* Code i of a row packed `bits` bits per code, LSB-first within each byte. */
BITMCU_INLINE uint32_t code_at(const uint8_t *row, uint32_t i, unsigned bits) {
    const unsigned per_byte_log2 = bits == 1u ? 3u : bits == 2u ? 2u : bits == 4u ? 1u : 0u;
    const uint32_t shift = (i & ((1u << per_byte_log2) - 1u)) * bits;
    return ((uint32_t)row[i >> per_byte_log2] >> shift) & ((1u << bits) - 1u);
}

/* Loop header shared by the kernels that decode each code themselves: walks the nonzero list
 * of `a` with index `i` and value `x`. */
#define BITMCU_FOR_NZ(a, i, x)                                                   \
    for (const uint8_t *p_ = (a)->nz, *e_ = (a)->nz + 2u * (a)->n_nz;          \
         p_ != e_ && ((i) += p_[0], (x) = p_[1], 1); p_ += 2)

/* ------------------------------------------------------------------------------------------ */
/* kernels: one per scheme; acc[o] = sum_i level(o, i) * x[i]                                  */

/* binary: level = 2c - 1, so acc = 2 * sum(c * x) - sum(x). Rows are interleaved in eights
 * (bit k of a byte: row 8g+k), so one byte load per nonzero activation feeds eight sums (two
 * passes of four rows each were measured slower: the second pass walks the list again). */
BITMCU_HOT(bitmcu_fc_binary) void bitmcu_fc_binary(const bitmcu_layer *L, const bitmcu_act *a,
                                                    int32_t *acc) {
    const int32_t bias = -(int32_t)a->sum;
    const uint8_t *w = L->weights;
    for (uint16_t o = 0; o < L->p.fc.n_out; o = (uint16_t)(o + 8u), w += L->p.fc.row_bytes) {
        const uint8_t *p = a->nz, *end = a->nz + 2u * a->n_nz;
        uint32_t i = 0, s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (; p != end; p += 2) {
            i += p[0];
            const uint32_t x = p[1], c = w[i];
            s[0] += x & bit_mask(c, 0);
            s[1] += x & bit_mask(c, 1);
            s[2] += x & bit_mask(c, 2);
            s[3] += x & bit_mask(c, 3);
            s[4] += x & bit_mask(c, 4);
            s[5] += x & bit_mask(c, 5);
            s[6] += x & bit_mask(c, 6);
            s[7] += x & bit_mask(c, 7);
        }
        for (uint32_t k = 0; k < 8u && o + k < L->p.fc.n_out; k++) {
            acc[o + k] = 2 * (int32_t)s[k] + bias;
        }
    }
}

/* 2bitsym: level = 2c - 3. Rows are interleaved in fours (bits 2k..2k+1 of a byte: row 4g+k),
 * so one byte load per nonzero activation feeds four accumulators. */
BITMCU_HOT(bitmcu_fc_2bitsym) void bitmcu_fc_2bitsym(const bitmcu_layer *L, const bitmcu_act *a,
                                                      int32_t *acc) {
    const uint8_t *w = L->weights; /* (ceil(n_out / 4), row_bytes = n_in) */
    const int32_t bias = -3 * a->sum;
    for (uint16_t o = 0; o < L->p.fc.n_out; o = (uint16_t)(o + 4u), w += L->p.fc.row_bytes) {
        const uint8_t *p = a->nz, *end = a->nz + 2u * a->n_nz;
        uint32_t i = 0, s[4] = {0, 0, 0, 0};
        for (; p != end; p += 2) {
            i += p[0];
            const uint32_t x = p[1], c = w[i];
#if BITMCU_HAS_MUL
            s[0] += (c & 3u) * x;
            s[1] += ((c >> 2) & 3u) * x;
            s[2] += ((c >> 4) & 3u) * x;
            s[3] += (c >> 6) * x;
#else
            const uint32_t x2 = x << 1;
            s[0] += (x & bit_mask(c, 0)) + (x2 & bit_mask(c, 1));
            s[1] += (x & bit_mask(c, 2)) + (x2 & bit_mask(c, 3));
            s[2] += (x & bit_mask(c, 4)) + (x2 & bit_mask(c, 5));
            s[3] += (x & bit_mask(c, 6)) + (x2 & bit_mask(c, 7));
#endif
        }
        for (uint32_t k = 0; k < 4u && o + k < L->p.fc.n_out; k++) {
            acc[o + k] = 2 * (int32_t)s[k] + bias;
        }
    }
}

/* How a kernel turns a code and an activation into a term: per weight (signed_term, the first
 * four) or, without a multiplier, through a table of the 16 products (term_table). */
typedef enum { TERM_4BIT, TERM_FP130, TERM_NF4, TERM_8BIT } term_kind;

/* NormalFloat4 levels (x127): magnitudes; codes 0..6 are negative */
static const uint8_t nf4_mag[16] = {127, 88, 67, 50, 36, 23, 12, 0, 10, 20, 31, 43, 56, 71, 92, 127};

/* level(code) * x for the sign-magnitude style schemes (`kind` is a constant after inlining). */
BITMCU_INLINE int32_t signed_term(uint32_t c, uint32_t x, term_kind kind) {
    switch (kind) {
    case TERM_4BIT: /* ones' complement: code = sign << 3 | magnitude */
        return cond_neg((int32_t)umul_code(c & 7u, x, 3), c >> 3);
    case TERM_FP130: /* code = sign << 3 | exponent: level = +-(1 << exponent), shifts only */
        return cond_neg((int32_t)(x << (c & 7u)), c >> 3);
    case TERM_NF4: /* table lookup */
        return cond_neg((int32_t)umul_code(nf4_mag[c], x, 7), c < 7u ? 1u : 0u);
    default: { /* 8bit: code = int8 level */
        const uint32_t neg = c >> 7;
        return cond_neg((int32_t)umul_code(neg ? 256u - c : c, x, 8), neg);
    }
    }
}

BITMCU_INLINE void fc_terms(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc,
                            term_kind kind) {
    const uint8_t *row = L->weights;
    for (uint16_t o = 0; o < L->p.fc.n_out; o++, row += L->p.fc.row_bytes) {
        int32_t s = 0;
        uint32_t i = 0, x = 0;
        BITMCU_FOR_NZ(a, i, x) {
            const uint32_t c = kind == TERM_8BIT ? row[i] : code_at(row, i, 4);
            s += signed_term(c, x, kind);
        }
        acc[o] = s;
    }
}

#if !BITMCU_HAS_MUL
/* The 16 products level(c) * x of a 4-bit scheme for one activation x, multiplier-free: 4bit's
 * magnitudes by repeated addition, NF4's by its table's constants
 * (the loop is unrolled, so each product is a constant multiplication the compiler turns into
 * shifts and adds). */
BITMCU_INLINE void term_table(uint32_t x, term_kind kind, int32_t t[16]) {
    if (kind == TERM_4BIT) {
        int32_t v = 0;
        for (uint32_t m = 0; m < 8u; m++, v += (int32_t)x) {
            t[m] = v;
            t[8u + m] = -v;
        }
        return;
    }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 16
#endif
    for (uint32_t c = 0; c < 16u; c++) {
        t[c] = cond_neg((int32_t)(x * nf4_mag[c]), c < 7u ? 1u : 0u);
    }
}

/* 4-bit codes without a multiplier, one nonzero activation at a time: its 16 products are
 * built once, then every output adds the one its code picks (a load instead of a shift-and-add
 * multiplication per weight). Rows are packed one after another. */
BITMCU_INLINE void fc_table4(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc,
                             term_kind kind) {
    for (uint16_t o = 0; o < L->p.fc.n_out; o++) {
        acc[o] = 0;
    }
    const uint32_t rb = L->p.fc.row_bytes;
    uint32_t i = 0, x = 0;
    BITMCU_FOR_NZ(a, i, x) {
        if (x == 0u) { /* a filler entry of a long gap */
            continue;
        }
        int32_t t[16];
        term_table(x, kind, t);
        const uint8_t *w = L->weights + (i >> 1);
        const uint32_t shift = (i & 1u) << 2;
        for (int32_t *s = acc, *end = acc + L->p.fc.n_out; s != end; s++, w += rb) {
            *s += t[(*w >> shift) & 15u];
        }
    }
}

/* 4bitsym's codes without a multiplier: per nonzero activation x its 16 products c * x, by
 * repeated addition (unrolled; t[0] = 0 is written once), then each row pair adds the two its
 * byte picks. The products fit 16 bits (15 * 255): half the stack of int32 ones, the same
 * loads, and the byte offsets of a byte's two entries are one shift and one mask each. Rows are
 * interleaved in pairs, one byte per input holding both rows' codes; an odd last row lies alone
 * in the low nibbles after the pairs, where the pair loop leaves w. */
BITMCU_INLINE void fc_table4sym(const bitmcu_layer *L, const bitmcu_act *a, int32_t *acc) {
    const uint32_t n = L->p.fc.n_out, rb = L->p.fc.row_bytes;
    for (uint32_t o = 0; o < n; o++) {
        acc[o] = 0;
    }
    uint16_t t[16];
    const uint8_t *tb = (const uint8_t *)t;
#if defined(__GNUC__)
    /* the table's address in a register: GCC otherwise rebuilds it from sp in the pair loop,
     * out of registers on RV32E (3 more instructions per pair, measured) */
    __asm__("" : "+r"(tb));
#endif
    t[0] = 0;
    uint32_t i = 0, x = 0;
    BITMCU_FOR_NZ(a, i, x) {
        if (x == 0u) { /* a filler entry of a long gap */
            continue;
        }
        uint32_t v = x;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 15
#endif
        for (uint32_t c = 1; c < 16u; c++, v += x) {
            t[c] = (uint16_t)v;
        }
        const uint8_t *w = L->weights + i;
        int32_t *s = acc;
        for (uint32_t g = n >> 1; g != 0u; g--, w += rb, s += 2) {
            const uint32_t c = *w;
            s[0] += *(const uint16_t *)(const void *)(tb + ((c << 1) & 30u));
            s[1] += *(const uint16_t *)(const void *)(tb + ((c >> 3) & 30u));
#if defined(__GNUC__)
            __asm__("" : "+r"(w)); /* else GCC computes w's last value with __mulsi3 */
#endif
        }
        if (n & 1u) {
            s[0] += t[*w & 15u];
        }
    }
}
#endif

/* 4bitsym: level = 2c - 15. Rows are interleaved in pairs (low nibble: even row, high nibble:
 * odd row), so one byte load per nonzero activation feeds two accumulators. */
BITMCU_HOT(bitmcu_fc_4bitsym) void bitmcu_fc_4bitsym(const bitmcu_layer *L, const bitmcu_act *a,
                                                      int32_t *acc) {
    const int32_t bias = -15 * a->sum;
#if BITMCU_HAS_MUL
    const uint8_t *w = L->weights; /* (ceil(n_out / 2), row_bytes = n_in) */
    for (uint16_t o = 0; o < L->p.fc.n_out; o = (uint16_t)(o + 2u), w += L->p.fc.row_bytes) {
        const uint8_t *p = a->nz, *end = a->nz + 2u * a->n_nz;
        uint32_t i = 0, s0 = 0, s1 = 0;
        for (; p != end; p += 2) {
            i += p[0];
            const uint32_t x = p[1], c = w[i];
            s0 += (c & 15u) * x;
            s1 += (c >> 4) * x;
        }
        acc[o] = 2 * (int32_t)s0 + bias;
        if (o + 1u < L->p.fc.n_out) {
            acc[o + 1u] = 2 * (int32_t)s1 + bias;
        }
    }
#else
    fc_table4sym(L, a, acc); /* acc = sum c * x */
    for (uint16_t o = 0; o < L->p.fc.n_out; o++) {
        acc[o] = 2 * acc[o] + bias;
    }
#endif
}

BITMCU_HOT(bitmcu_fc_4bit) void bitmcu_fc_4bit(const bitmcu_layer *L, const bitmcu_act *a,
                                                int32_t *acc) {
#if BITMCU_HAS_MUL
    fc_terms(L, a, acc, TERM_4BIT);
#else
    fc_table4(L, a, acc, TERM_4BIT);
#endif
}

BITMCU_HOT(bitmcu_fc_fp130) void bitmcu_fc_fp130(const bitmcu_layer *L, const bitmcu_act *a,
                                                  int32_t *acc) {
    fc_terms(L, a, acc, TERM_FP130);
}

BITMCU_HOT(bitmcu_fc_nf4) void bitmcu_fc_nf4(const bitmcu_layer *L, const bitmcu_act *a,
                                              int32_t *acc) {
#if BITMCU_HAS_MUL
    fc_terms(L, a, acc, TERM_NF4);
#else
    fc_table4(L, a, acc, TERM_NF4);
#endif
}

BITMCU_HOT(bitmcu_fc_8bit) void bitmcu_fc_8bit(const bitmcu_layer *L, const bitmcu_act *a,
                                                int32_t *acc) {
    fc_terms(L, a, acc, TERM_8BIT);
}

/* ternary: 5 trits per byte in base 3 (trit = level + 1), along the row. The byte's trits come
 * from a table in flash (decoding base 3 costs ~40 instructions a byte without a divider):
 * with a multiplier trit t in bits 2t..2t+1 (the kernel sums trit * x and subtracts the sum of
 * the activations), without one the mask of the +1 weights in bits 0..4 and of the -1 weights
 * in bits 8..12. Generated by
 *   [sum((b // 3**t) % 3 << 2 * t for t in range(5)) for b in range(243)]
 *   [sum(((b // 3**t) % 3 == 2) << t | ((b // 3**t) % 3 == 0) << (t + 8) for t in range(5))
 *    for b in range(243)]
 * Bytes 243..255 are never written by export; 0. */
#if BITMCU_HAS_MUL
static const uint16_t trit_table[256] = {
    0x0000, 0x0001, 0x0002, 0x0004, 0x0005, 0x0006, 0x0008, 0x0009, 0x000A,
    0x0010, 0x0011, 0x0012, 0x0014, 0x0015, 0x0016, 0x0018, 0x0019, 0x001A,
    0x0020, 0x0021, 0x0022, 0x0024, 0x0025, 0x0026, 0x0028, 0x0029, 0x002A,
    0x0040, 0x0041, 0x0042, 0x0044, 0x0045, 0x0046, 0x0048, 0x0049, 0x004A,
    0x0050, 0x0051, 0x0052, 0x0054, 0x0055, 0x0056, 0x0058, 0x0059, 0x005A,
    0x0060, 0x0061, 0x0062, 0x0064, 0x0065, 0x0066, 0x0068, 0x0069, 0x006A,
    0x0080, 0x0081, 0x0082, 0x0084, 0x0085, 0x0086, 0x0088, 0x0089, 0x008A,
    0x0090, 0x0091, 0x0092, 0x0094, 0x0095, 0x0096, 0x0098, 0x0099, 0x009A,
    0x00A0, 0x00A1, 0x00A2, 0x00A4, 0x00A5, 0x00A6, 0x00A8, 0x00A9, 0x00AA,
    0x0100, 0x0101, 0x0102, 0x0104, 0x0105, 0x0106, 0x0108, 0x0109, 0x010A,
    0x0110, 0x0111, 0x0112, 0x0114, 0x0115, 0x0116, 0x0118, 0x0119, 0x011A,
    0x0120, 0x0121, 0x0122, 0x0124, 0x0125, 0x0126, 0x0128, 0x0129, 0x012A,
    0x0140, 0x0141, 0x0142, 0x0144, 0x0145, 0x0146, 0x0148, 0x0149, 0x014A,
    0x0150, 0x0151, 0x0152, 0x0154, 0x0155, 0x0156, 0x0158, 0x0159, 0x015A,
    0x0160, 0x0161, 0x0162, 0x0164, 0x0165, 0x0166, 0x0168, 0x0169, 0x016A,
    0x0180, 0x0181, 0x0182, 0x0184, 0x0185, 0x0186, 0x0188, 0x0189, 0x018A,
    0x0190, 0x0191, 0x0192, 0x0194, 0x0195, 0x0196, 0x0198, 0x0199, 0x019A,
    0x01A0, 0x01A1, 0x01A2, 0x01A4, 0x01A5, 0x01A6, 0x01A8, 0x01A9, 0x01AA,
    0x0200, 0x0201, 0x0202, 0x0204, 0x0205, 0x0206, 0x0208, 0x0209, 0x020A,
    0x0210, 0x0211, 0x0212, 0x0214, 0x0215, 0x0216, 0x0218, 0x0219, 0x021A,
    0x0220, 0x0221, 0x0222, 0x0224, 0x0225, 0x0226, 0x0228, 0x0229, 0x022A,
    0x0240, 0x0241, 0x0242, 0x0244, 0x0245, 0x0246, 0x0248, 0x0249, 0x024A,
    0x0250, 0x0251, 0x0252, 0x0254, 0x0255, 0x0256, 0x0258, 0x0259, 0x025A,
    0x0260, 0x0261, 0x0262, 0x0264, 0x0265, 0x0266, 0x0268, 0x0269, 0x026A,
    0x0280, 0x0281, 0x0282, 0x0284, 0x0285, 0x0286, 0x0288, 0x0289, 0x028A,
    0x0290, 0x0291, 0x0292, 0x0294, 0x0295, 0x0296, 0x0298, 0x0299, 0x029A,
    0x02A0, 0x02A1, 0x02A2, 0x02A4, 0x02A5, 0x02A6, 0x02A8, 0x02A9, 0x02AA,
};
#else
static const uint16_t trit_table[256] = {
    0x1F00, 0x1E00, 0x1E01, 0x1D00, 0x1C00, 0x1C01, 0x1D02, 0x1C02, 0x1C03,
    0x1B00, 0x1A00, 0x1A01, 0x1900, 0x1800, 0x1801, 0x1902, 0x1802, 0x1803,
    0x1B04, 0x1A04, 0x1A05, 0x1904, 0x1804, 0x1805, 0x1906, 0x1806, 0x1807,
    0x1700, 0x1600, 0x1601, 0x1500, 0x1400, 0x1401, 0x1502, 0x1402, 0x1403,
    0x1300, 0x1200, 0x1201, 0x1100, 0x1000, 0x1001, 0x1102, 0x1002, 0x1003,
    0x1304, 0x1204, 0x1205, 0x1104, 0x1004, 0x1005, 0x1106, 0x1006, 0x1007,
    0x1708, 0x1608, 0x1609, 0x1508, 0x1408, 0x1409, 0x150A, 0x140A, 0x140B,
    0x1308, 0x1208, 0x1209, 0x1108, 0x1008, 0x1009, 0x110A, 0x100A, 0x100B,
    0x130C, 0x120C, 0x120D, 0x110C, 0x100C, 0x100D, 0x110E, 0x100E, 0x100F,
    0x0F00, 0x0E00, 0x0E01, 0x0D00, 0x0C00, 0x0C01, 0x0D02, 0x0C02, 0x0C03,
    0x0B00, 0x0A00, 0x0A01, 0x0900, 0x0800, 0x0801, 0x0902, 0x0802, 0x0803,
    0x0B04, 0x0A04, 0x0A05, 0x0904, 0x0804, 0x0805, 0x0906, 0x0806, 0x0807,
    0x0700, 0x0600, 0x0601, 0x0500, 0x0400, 0x0401, 0x0502, 0x0402, 0x0403,
    0x0300, 0x0200, 0x0201, 0x0100, 0x0000, 0x0001, 0x0102, 0x0002, 0x0003,
    0x0304, 0x0204, 0x0205, 0x0104, 0x0004, 0x0005, 0x0106, 0x0006, 0x0007,
    0x0708, 0x0608, 0x0609, 0x0508, 0x0408, 0x0409, 0x050A, 0x040A, 0x040B,
    0x0308, 0x0208, 0x0209, 0x0108, 0x0008, 0x0009, 0x010A, 0x000A, 0x000B,
    0x030C, 0x020C, 0x020D, 0x010C, 0x000C, 0x000D, 0x010E, 0x000E, 0x000F,
    0x0F10, 0x0E10, 0x0E11, 0x0D10, 0x0C10, 0x0C11, 0x0D12, 0x0C12, 0x0C13,
    0x0B10, 0x0A10, 0x0A11, 0x0910, 0x0810, 0x0811, 0x0912, 0x0812, 0x0813,
    0x0B14, 0x0A14, 0x0A15, 0x0914, 0x0814, 0x0815, 0x0916, 0x0816, 0x0817,
    0x0710, 0x0610, 0x0611, 0x0510, 0x0410, 0x0411, 0x0512, 0x0412, 0x0413,
    0x0310, 0x0210, 0x0211, 0x0110, 0x0010, 0x0011, 0x0112, 0x0012, 0x0013,
    0x0314, 0x0214, 0x0215, 0x0114, 0x0014, 0x0015, 0x0116, 0x0016, 0x0017,
    0x0718, 0x0618, 0x0619, 0x0518, 0x0418, 0x0419, 0x051A, 0x041A, 0x041B,
    0x0318, 0x0218, 0x0219, 0x0118, 0x0018, 0x0019, 0x011A, 0x001A, 0x001B,
    0x031C, 0x021C, 0x021D, 0x011C, 0x001C, 0x001D, 0x011E, 0x001E, 0x001F,
};
#endif

/* Bit places per trit in a table entry. */
#if BITMCU_HAS_MUL
#define TRIT_STEP 2u
#else
#define TRIT_STEP 1u
#endif

/* x times the trit at bit place `place` of table entry m: with a multiplier x * (level + 1),
 * the caller subtracting the activation sum; without one x * level by the two masks. */
BITMCU_INLINE uint32_t trit_term(uint32_t m, uint32_t place, uint32_t x) {
#if BITMCU_HAS_MUL
    return ((m >> place) & 3u) * x;
#else
    const uint32_t mt = m >> place;
    return (x & -(mt & 1u)) - (x & -((mt >> 8) & 1u));
#endif
}

/* Two rows per pass over the nonzero list: the bytes w0 and w1 hold the trits of the current
 * input and the four beside it in the two rows; `place` is the input's bit place in their table
 * entries m0 and m1, followed along the list (no division). An odd last row is passed with
 * itself as its second row, whose sum is dropped. */
BITMCU_HOT(bitmcu_fc_ternary) void bitmcu_fc_ternary(const bitmcu_layer *L, const bitmcu_act *a,
                                                      int32_t *acc) {
    const uint8_t *row = L->weights;
    const uint32_t rb = L->p.fc.row_bytes;
    const int32_t bias = BITMCU_HAS_MUL ? a->sum : 0;
    for (uint16_t o = 0; o < L->p.fc.n_out; o = (uint16_t)(o + 2u), row += 2u * rb) {
        const uint32_t second = o + 1u < L->p.fc.n_out ? rb : 0u;
        const uint8_t *w0 = row, *w1 = row + second;
        uint32_t place = 0, m0 = trit_table[*w0], m1 = trit_table[*w1], s0 = 0, s1 = 0;
        for (const uint8_t *p = a->nz, *end = a->nz + 2u * a->n_nz; p != end; p += 2) {
            place += (uint32_t)p[0] * TRIT_STEP;
            if (place >= 5u * TRIT_STEP) {
                do {
                    place -= 5u * TRIT_STEP;
                    w0++;
                    w1++;
                } while (place >= 5u * TRIT_STEP);
                m0 = trit_table[*w0];
                m1 = trit_table[*w1];
            }
            const uint32_t x = p[1];
            s0 += trit_term(m0, place, x);
            s1 += trit_term(m1, place, x);
        }
        acc[o] = (int32_t)s0 - bias;
        if (second) {
            acc[o + 1u] = (int32_t)s1 - bias;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* ShiftNorm: the integer stand-in for normalization + activation quantization                 */

/* Smallest shift s with (m >> s) <= act_max. */
BITMCU_INLINE uint32_t shift_for(uint32_t m, uint32_t act_max) {
    uint32_t s = 0;
    while ((m >> s) > act_max) {
        s++;
    }
    return s;
}

/* (v + round) >> s, clamped to act_max: the one rounding rule of the engine. */
BITMCU_INLINE uint32_t shift_round(uint32_t v, uint32_t s, uint32_t act_max) {
    const uint32_t r = (v + ((1u << s) >> 1u)) >> s; /* s = 0: v */
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

/* ShiftNorm to the nonzero list (s->act, at the plan's nz_at): of the input pixels (pix) or, pix
 * NULL, of ReLU(acc); with a bias unit one more input, index n, holding the largest value. A
 * hot kernel (in SRAM where the RAM allows): it goes through every value of every layer. */
BITMCU_HOT(bitmcu_shiftnorm)
static void bitmcu_shiftnorm(bitmcu_state *st, const int32_t *acc, const uint8_t *pix,
                             uint16_t n) {
    const bitmcu_model *model = st->model;
    const uint32_t act_max = model->act_max, bias_unit = model->bias_unit;
    uint8_t *const nz = st->arena + model->nz_at;
    bitmcu_act *const a = &st->act;
    uint32_t m = 0; /* the largest value after ReLU; a loop per source */
    if (pix) {
        for (uint32_t i = 0; i < n; i++) {
            m = pix[i] > m ? pix[i] : m;
        }
    } else {
        for (uint32_t i = 0; i < n; i++) {
            m = acc[i] > (int32_t)m ? (uint32_t)acc[i] : m;
        }
    }
    const uint32_t s = shift_for(m, act_max);
    uint16_t k = 0;
    uint32_t prev = 0;
    int32_t sum = 0;
    const uint32_t end = (uint32_t)n + (bias_unit ? 1u : 0u);
    for (uint32_t i = 0; i < end; i++) {
        const int32_t x = i == n ? (int32_t)m : pix ? pix[i] : acc[i];
        const uint32_t v = x > 0 ? shift_round((uint32_t)x, s, act_max) : 0u;
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
/* convolutional front end: one channel at a time                                             */

/* The level of an 8-bit code: the byte read as two's complement int8. */
BITMCU_INLINE int32_t int8_level(uint32_t b) {
    return (int32_t)b - (int32_t)((b & 0x80u) << 1);
}

/* Level k of output row r of a layer's packed weights, any scheme (front-end layers decode
 * their 9 weights per channel once with it). */
#if defined(__GNUC__) && BITMCU_HAS_MUL
__attribute__((noinline)) /* stays in flash when the front end runs from SRAM */
#endif
static int32_t level_at(const bitmcu_layer *L, uint32_t r, uint32_t k) {
    const uint8_t *row = L->weights + r * L->p.map.row_bytes;
    switch (L->scheme) {
    case BITMCU_SCHEME_BINARY: /* rows interleaved in eights */
    case BITMCU_SCHEME_BINARY_BALANCED: {
        const uint8_t b = L->weights[(r >> 3) * L->p.map.row_bytes + k];
        return 2 * (int32_t)((b >> (r & 7u)) & 1u) - 1;
    }
    case BITMCU_SCHEME_TERNARY: {
        const uint32_t q = ((k << 7) + (k << 6) + (k << 3) + (k << 2) + k) >> 10; /* k / 5 */
        const uint32_t t = k - ((q << 2) + q);
        const uint32_t v = trit_term(trit_table[row[q]], t * TRIT_STEP, 1u); /* level (+ 1) */
        return (int32_t)v - (BITMCU_HAS_MUL ? 1 : 0);
    }
    case BITMCU_SCHEME_2BITSYM: { /* rows interleaved in fours */
        const uint8_t b = L->weights[(r >> 2) * L->p.map.row_bytes + k];
        return 2 * (int32_t)((b >> ((r & 3u) << 1)) & 3u) - 3;
    }
    case BITMCU_SCHEME_4BITSYM: { /* rows interleaved in pairs */
        const uint8_t b = L->weights[(r >> 1) * L->p.map.row_bytes + k];
        return 2 * (int32_t)((b >> ((r & 1u) << 2)) & 15u) - 15;
    }
    case BITMCU_SCHEME_4BIT:
        return cond_neg((int32_t)(code_at(row, k, 4) & 7u), code_at(row, k, 4) >> 3);
    case BITMCU_SCHEME_FP130:
        return cond_neg((int32_t)(1u << (code_at(row, k, 4) & 7u)), code_at(row, k, 4) >> 3);
    case BITMCU_SCHEME_NF4: {
        const uint32_t c = code_at(row, k, 4);
        return cond_neg((int32_t)nf4_mag[c], c < 7u ? 1u : 0u);
    }
    default: /* 8bit */
        return int8_level(row[k]);
    }
}

/* The nine levels of channel c's 3x3 kernel in front-end layer L (8-bit weights directly). */
BITMCU_INLINE void kernel_levels_8bit(const bitmcu_layer *L, uint32_t c, int32_t w[9]) {
    const uint8_t *row = L->weights + c * L->p.map.row_bytes;
    for (uint32_t k = 0; k < 9u; k++) {
        w[k] = int8_level(row[k]);
    }
}

static void kernel_levels(const bitmcu_layer *L, uint32_t c, int32_t w[9]) {
    if (L->scheme == BITMCU_SCHEME_8BIT) {
        kernel_levels_8bit(L, c, w);
        return;
    }
    for (uint32_t k = 0; k < 9u; k++) {
        w[k] = level_at(L, c, k);
    }
}

/* Outputs of one conv row at most: inputs are at most 28x28 (the MNIST source resolution). */
#define BITMCU_CONV_MAX_SIDE 28u

/* ReLU, then requantization of one conv output by its layer's fixed shift. */
BITMCU_INLINE uint8_t conv_out(int32_t v, uint32_t shift, uint32_t act_max) {
    return (uint8_t)(v > 0 ? shift_round((uint32_t)v, shift, act_max) : 0u);
}

/* How a row pass of a 3x3 convolution combines its three taps with the row sums. */
typedef enum { CONV_FIRST, CONV_ADD, CONV_LAST } conv_pass;

#if BITMCU_HAS_MUL
/* Row sum s of output x by `pass`. FIRST: acc = s; ADD: acc += s; LAST: out = requantized
 * acc + s. */
BITMCU_INLINE void conv_put(int32_t *acc, uint8_t *out, uint32_t x, int32_t s, conv_pass pass,
                            uint32_t shift, uint32_t act_max) {
    if (pass == CONV_FIRST) {
        acc[x] = s;
    } else if (pass == CONV_ADD) {
        acc[x] += s;
    } else {
        out[x] = conv_out(acc[x] + s, shift, act_max);
    }
}

/* One kernel row over one input row: w0 * r[x] + w1 * r[x + 1] + w2 * r[x + 2] for x < n,
 * two outputs per step over a sliding window whose last two pixels stay in registers (one
 * load and three multiplies per output). */
BITMCU_INLINE void conv_row_mul(const uint8_t *r, const int32_t *w, int32_t *acc, uint8_t *out,
                                uint32_t n, conv_pass pass, uint32_t shift, uint32_t act_max) {
    const int32_t w0 = w[0], w1 = w[1], w2 = w[2];
    int32_t a = r[0], b = r[1];
    uint32_t x = 0;
    for (; x + 1u < n; x += 2u) {
        const int32_t c = r[x + 2u], d = r[x + 3u];
        conv_put(acc, out, x, w0 * a + w1 * b + w2 * c, pass, shift, act_max);
        conv_put(acc, out, x + 1u, w0 * b + w1 * c + w2 * d, pass, shift, act_max);
        a = c;
        b = d;
    }
    if (x < n) {
        conv_put(acc, out, x, w0 * a + w1 * b + w2 * r[x + 2u], pass, shift, act_max);
    }
}

/* One channel of a 3x3 convolution without padding, requantized by a fixed shift:
 * in (side, side) -> out (side - 2, side - 2), one output row at a time in three row passes.
 * `w` holds the nine decoded levels. */
BITMCU_HOT(bitmcu_conv3x3)
void bitmcu_conv3x3(const int32_t w[9], uint32_t shift, uint32_t act_max, const uint8_t *in,
                    uint16_t side, uint8_t *out) {
    int32_t acc[BITMCU_CONV_MAX_SIDE];
    const uint32_t n = (uint32_t)side - 2u;
    for (uint32_t y = 0; y < n; y++, in += side, out += n) {
        conv_row_mul(in, w, acc, out, n, CONV_FIRST, shift, act_max);
        conv_row_mul(in + side, w + 3, acc, out, n, CONV_ADD, shift, act_max);
        conv_row_mul(in + 2u * side, w + 6, acc, out, n, CONV_LAST, shift, act_max);
    }
}
#else
/* One kernel row of three nonzero power-of-two levels +-2^e over one input row, shifts only:
 * sum of ((r[x + k] << e_k) ^ m_k) with m_k = 0 or all ones; for a negative level that is
 * -(r << e) - 1, and the caller adds back one per negative level in `bias`. */
BITMCU_INLINE void conv_row_pow2(const uint8_t *r, const uint8_t *e, const uint32_t *m,
                                 int32_t bias, int32_t *acc, uint32_t n, conv_pass pass) {
    const uint32_t e0 = e[0], e1 = e[1], e2 = e[2], m0 = m[0], m1 = m[1], m2 = m[2];
    const int32_t *const end = acc + n;
    for (; acc < end; acc++, r++) {
        const uint32_t s = (((uint32_t)r[0] << e0) ^ m0) + (((uint32_t)r[1] << e1) ^ m1) +
                           (((uint32_t)r[2] << e2) ^ m2);
        if (pass == CONV_FIRST) {
            *acc = (int32_t)s + bias;
        } else {
            *acc += (int32_t)s;
        }
    }
}

/* acc[x] +- (r[x] << e) for x < n: one signed power-of-two digit of a level. */
BITMCU_INLINE void conv_digit(const uint8_t *r, uint32_t e, uint32_t neg, int32_t *acc,
                              uint32_t n) {
    if (neg) {
        for (uint32_t x = 0; x < n; x++) {
            acc[x] -= (int32_t)((uint32_t)r[x] << e);
        }
    } else {
        for (uint32_t x = 0; x < n; x++) {
            acc[x] += (int32_t)((uint32_t)r[x] << e);
        }
    }
}

/* acc[x] += w * r[x] for x < n, shifts and adds only: |w| in non-adjacent form (signed digits
 * +-2^e, no two adjacent; at most 4 for |w| <= 128, 2.4 on average for 8-bit levels), one pass
 * per digit. */
BITMCU_INLINE void conv_tap(const uint8_t *r, int32_t w, int32_t *acc, uint32_t n) {
    const uint32_t neg = (uint32_t)w >> 31;
    uint32_t mag = neg ? (uint32_t)-w : (uint32_t)w;
    for (uint32_t e = 0; mag; e++, mag >>= 1) {
        if (mag & 1u) {
            const uint32_t down = (mag & 3u) == 3u; /* ...11: digit -1 here, carry upwards */
            conv_digit(r, e, down ^ neg, acc, n);
            mag = down ? mag + 1u : mag - 1u;
        }
    }
}

/* The taps of one kernel row one by one, skipping zero levels. */
BITMCU_INLINE void conv_row_taps(const uint8_t *r, const int32_t *w, int32_t *acc, uint32_t n) {
    for (uint32_t kx = 0; kx < 3u; kx++) {
        if (w[kx]) {
            conv_tap(r + kx, w[kx], acc, n);
        }
    }
}

/* Writes zeros to p[0..n). */
BITMCU_INLINE void zero_bytes(uint8_t *p, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        p[i] = 0u;
    }
}

/* 1 if the n bytes from p on, `step` apart, are all zero. */
BITMCU_INLINE uint32_t all_zero(const uint8_t *p, uint32_t n, uint32_t step) {
    for (uint32_t i = 0; i < n; i++, p += step) {
        if (*p) {
            return 0u;
        }
    }
    return 1u;
}

/* The rectangle outside which a (side, side) map is zero: rows [b[0], b[1]), columns
 * [b[2], b[3]); b[0] == b[1] for an all-zero map. Found from the four edges inwards, so it costs
 * about one load per zero border pixel. */
static void map_box(const uint8_t *m, uint32_t side, uint8_t b[4]) {
    const uint8_t *top = m, *bottom = m;
    for (uint32_t y = 1; y < side; y++) {
        bottom += side;
    }
    uint32_t y0 = 0, y1 = side, x0 = 0, x1 = side;
    while (y0 < side && all_zero(top, side, 1u)) {
        y0++;
        top += side;
    }
    if (y0 == side) {
        b[0] = b[1] = b[2] = b[3] = 0u;
        return;
    }
    while (all_zero(bottom, side, 1u)) {
        y1--;
        bottom -= side;
    }
    while (all_zero(top + x0, y1 - y0, side)) {
        x0++;
    }
    while (all_zero(top + x1 - 1u, y1 - y0, side)) {
        x1--;
    }
    b[0] = (uint8_t)y0;
    b[1] = (uint8_t)y1;
    b[2] = (uint8_t)x0;
    b[3] = (uint8_t)x1;
}

/* Rows [o[0], o[1]) and columns [o[2], o[3]) of a 3x3 convolution's (n, n) output can be
 * nonzero, given the box `b` of its input; an empty box gives o[0] == o[1]. */
BITMCU_INLINE void conv_box(const uint8_t b[4], uint32_t n, uint32_t o[4]) {
    o[0] = b[0] > 2u ? b[0] - 2u : 0u;
    o[1] = b[0] < b[1] ? (b[1] < n ? b[1] : n) : o[0];
    o[2] = b[2] > 2u ? b[2] - 2u : 0u;
    o[3] = b[3] < n ? b[3] : n;
}

/* conv_row_taps over the outputs whose window meets the nonzero pixels of input row r, which
 * lie in its columns [lo, hi) (the box's); acc[0] is output column `first`, n outputs a row. */
BITMCU_INLINE void conv_row_taps_nz(const uint8_t *r, const int32_t *w, int32_t *acc, uint32_t lo,
                                    uint32_t hi, uint32_t first, uint32_t n) {
    while (lo < hi && r[lo] == 0u) {
        lo++;
    }
    if (lo == hi) {
        return;
    }
    while (r[hi - 1u] == 0u) {
        hi--;
    }
    const uint32_t x0 = lo > 2u ? lo - 2u : 0u, x1 = hi < n ? hi : n;
    conv_row_taps(r + x0, w, acc + (x0 - first), x1 - x0);
}

/* One channel of a 3x3 convolution without padding, requantized by a fixed shift:
 * in (side, side) -> out (side - 2, side - 2), one output row at a time. The convolutions have
 * no bias, so an output whose window lies outside the input's nonzero rectangle `b` (map_box) is
 * zero: only the others are computed, from the input rows inside the rectangle. A kernel row of
 * three nonzero powers of two (every row of fp130, most of binary) takes one fused shift-only
 * pass over them; other rows go tap by tap, skipping zero levels, over the outputs whose window
 * meets that input row's own nonzero pixels (on MNIST about half of the first two convolutions'
 * work; the CH32V003's 8-bit CNN takes a fifth fewer cycles). */
static void conv3x3_box(const int32_t w[9], uint32_t shift, uint32_t act_max, const uint8_t *in,
                        uint16_t side, const uint8_t b[4], uint8_t *out) {
    int32_t acc[BITMCU_CONV_MAX_SIDE];
    uint8_t e[9];
    uint32_t m[9], fast = 0;
    for (uint32_t k = 0; k < 9u; k++) {
        const uint32_t mag = w[k] < 0 ? (uint32_t)-w[k] : (uint32_t)w[k];
        uint32_t bit = 0;
        while ((1u << bit) < mag) {
            bit++;
        }
        e[k] = (uint8_t)bit;
        m[k] = w[k] < 0 ? 0xFFFFFFFFu : 0u;
        if (mag == (1u << bit)) {
            fast |= 1u << k;
        }
    }
    uint32_t fast_rows = 0; /* bit ky: kernel row ky takes the fused pass */
    int32_t row_bias[3];    /* what kernel row ky's fused pass owes back (its negative levels) */
    for (uint32_t ky = 0, k = 0; ky < 3u; ky++, k += 3u) {
        row_bias[ky] = 0;
        if (((fast >> k) & 7u) == 7u) {
            fast_rows |= 1u << ky;
            row_bias[ky] = (int32_t)(m[k] & 1u) + (int32_t)(m[k + 1u] & 1u) +
                           (int32_t)(m[k + 2u] & 1u);
        }
    }
    const uint32_t n = (uint32_t)side - 2u;
    uint32_t o[4];
    conv_box(b, n, o);
    const uint32_t cols = o[3] - o[2];
    for (uint32_t y = 0; y < n; y++, in += side, out += n) {
        if (y < o[0] || y >= o[1]) {
            zero_bytes(out, n);
            continue;
        }
        zero_bytes(out, o[2]);
        zero_bytes(out + o[3], n - o[3]);
        /* kernel rows whose input row meets the box: [k0, k1), at least one */
        const uint32_t k0 = y < b[0] ? b[0] - y : 0u, k1 = y + 3u < b[1] ? 3u : b[1] - y;
        int32_t bias = 0;
        const uint8_t *r = in;
        for (uint32_t ky = 0; ky < k0; ky++) {
            r += side;
        }
        for (uint32_t ky = k0; ky < k1; ky++) {
            bias += row_bias[ky];
        }
        /* fused rows cover all the box's outputs; tap-by-tap rows only those near their own
         * nonzero pixels */
        if ((fast_rows >> k0) & 1u) {
            conv_row_pow2(r + o[2], e + 3u * k0, m + 3u * k0, bias, acc, cols, CONV_FIRST);
        } else {
            for (uint32_t x = 0; x < cols; x++) {
                acc[x] = bias;
            }
            conv_row_taps_nz(r, w + 3u * k0, acc, b[2], b[3], o[2], n);
        }
        for (uint32_t ky = k0 + 1u; ky < k1; ky++) {
            r += side;
            if ((fast_rows >> ky) & 1u) {
                conv_row_pow2(r + o[2], e + 3u * ky, m + 3u * ky, 0, acc, cols, CONV_ADD);
            } else {
                conv_row_taps_nz(r, w + 3u * ky, acc, b[2], b[3], o[2], n);
            }
        }
        uint8_t *dst = out + o[2];
        for (uint32_t x = 0; x < cols; x++) {
            dst[x] = conv_out(acc[x], shift, act_max);
        }
    }
}

void bitmcu_conv3x3(const int32_t w[9], uint32_t shift, uint32_t act_max, const uint8_t *in,
                    uint16_t side, uint8_t *out) {
    uint8_t b[4];
    map_box(in, side, b);
    conv3x3_box(w, shift, act_max, in, side, b, out);
}
#endif

/* One channel of a 2x2 max-pool, stride 2: in (side, side) -> out (side / 2, side / 2). */
BITMCU_INLINE void maxpool2(const uint8_t *in, uint16_t side, uint8_t *out) {
    const uint32_t o = side / 2u, s = side;
    for (uint32_t y = 0; y < o; y++) {
        const uint8_t *r = in + 2u * y * s;
        for (uint32_t x = 0; x < o; x++, r += 2) {
            uint8_t m = r[0] > r[1] ? r[0] : r[1];
            m = r[s] > m ? r[s] : m;
            *out++ = r[s + 1u] > m ? r[s + 1u] : m;
        }
    }
}

/* The front end for every channel: image -> features (n_features bytes, channel-major). In
 * SRAM where the convolution is (multiply builds: the CH32V002 has the room, the CH32V003 not).
 *
 * The final channels are produced one after another, counted like an odometer with one digit
 * per layer: the first convolution's channel, then for each DW*K which of its K channels (other
 * layers have one). A layer is recomputed when its digit or one before it moves. Each map lies
 * where the plan put it (the layer's buf, verified by bitmcu_check): two buffers of the largest
 * map taken in turns, and a buffer of its own for a map that feeds a DW*K (K > 1), kept while
 * its K channels are computed from it. any_scheme 0: the convolutions are all 8-bit and decoded
 * directly. */
BITMCU_INLINE const bitmcu_layer *front_end(bitmcu_state *s, const bitmcu_layer *at,
                                            uint32_t any_scheme) {
    const bitmcu_model *model = s->model;
    const bitmcu_layer *layers = model->layers;
    const uint32_t n_front = model->n_front;
    const uint8_t *input = s->pixels; /* the image */
    uint8_t *arena = s->arena;
    uint16_t digit[BITMCU_MAX_FRONT]; /* odometer digit of each layer */
    uint16_t chan[BITMCU_MAX_FRONT];  /* the layer's next channel */
    if (n_front == 0u || n_front >= model->n_layers || n_front > BITMCU_MAX_FRONT ||
        at != layers) {
        return NULL;
    }
    s->pixels = arena + model->feat_at;
    const bitmcu_layer *final = &layers[n_front - 1u];
    const uint32_t final_side =
        final->op == BITMCU_OP_POOL ? final->p.map.side >> 1 : final->p.map.side - 2u;
    const uint32_t n = final_side * final_side; /* bytes of the final map */
    uint8_t *feat = arena + model->feat_at;
    for (uint32_t l = 0; l < n_front; l++) {
        digit[l] = 0u;
        chan[l] = 0u;
    }
#if !BITMCU_HAS_MUL
    uint8_t image_box[4];
    map_box(input, layers[0].p.map.side, image_box);
#endif
    uint32_t from = 0; /* the first layer to recompute */
    for (;;) {
        const uint8_t *src = from ? arena + layers[from - 1u].buf : input;
        for (uint32_t l = from; l < n_front; l++) {
            const bitmcu_layer *L = &layers[l];
            uint8_t *dst = arena + L->buf; /* where the plan put the layer's map */
            if (L->op == BITMCU_OP_POOL) {
                maxpool2(src, L->p.map.side, dst);
            } else {
                int32_t w[9];
                if (any_scheme) {
                    kernel_levels(L, chan[l], w);
                } else {
                    kernel_levels_8bit(L, chan[l], w);
                }
#if BITMCU_HAS_MUL
                bitmcu_conv3x3(w, L->p.map.shift, model->act_max, src, L->p.map.side, dst);
#else
                if (l == 0u) { /* every channel convolves the same image */
                    conv3x3_box(w, L->p.map.shift, model->act_max, src, L->p.map.side, image_box,
                                dst);
                } else {
                    bitmcu_conv3x3(w, L->p.map.shift, model->act_max, src, L->p.map.side, dst);
                }
#endif
            }
            chan[l]++;
            src = dst;
        }
        for (uint32_t i = 0; i < n; i++) { /* src: the final map */
            feat[i] = src[i];
        }
        feat += n;
        /* Advance the odometer from the last digit; done when the first one wraps. */
        for (from = n_front; from-- > 0u;) {
            const bitmcu_layer *L = &layers[from];
            const uint32_t base = from == 0u                ? L->p.map.channels
                                  : L->op == BITMCU_OP_DW ? L->p.map.mult
                                                          : 1u;
            if (++digit[from] < base) {
                break;
            }
            digit[from] = 0u;
            if (from == 0u) {
                return layers + n_front; /* the fc layers go on from the features */
            }
        }
    }
}

#if BITMCU_HAS_MUL
BITMCU_HOT(bitmcu_front_end)
#endif
const bitmcu_layer *bitmcu_front_end(bitmcu_state *s, const bitmcu_layer *at) {
    return front_end(s, at, 1u);
}

/* The same for models whose convolutions are all 8-bit: without the any-scheme decoder (and its
 * tables), which a firmware then does not link. */
#if BITMCU_HAS_MUL
BITMCU_HOT(bitmcu_front_end_8bit)
#endif
const bitmcu_layer *bitmcu_front_end_8bit(bitmcu_state *s, const bitmcu_layer *at) {
    return front_end(s, at, 0u);
}

/* ------------------------------------------------------------------------------------------ */
/* randomness: the PRNG and the latent sampler (mirrored by bitmcu/core/rng.py)               */

uint32_t bitmcu_xorshift32(uint32_t *state) {
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

uint32_t bitmcu_seed_state(uint32_t seed) {
    uint32_t s = seed ^ BITMCU_XORSHIFT_ZERO;
    s = s ? s : BITMCU_XORSHIFT_ZERO;
    for (uint32_t i = 0; i < BITMCU_SEED_ROUNDS; i++) {
        (void)bitmcu_xorshift32(&s);
    }
    return s;
}

/* centre + (g * scale + 128 >> 8), clamped to int8, without a multiplier: scale's bits, shift
 * and add (two's complement) */
BITMCU_INLINE int8_t scale_latent(int32_t g, uint32_t scale, int32_t centre) {
    uint32_t p = 0;
    for (uint32_t b = 0; b < 8u; b++) {
        p += ((uint32_t)g << b) & bit_mask(scale, b);
    }
    int32_t v = centre + (((int32_t)p + 128) >> 8);
    v = v > 127 ? 127 : v < -127 ? -127 : v;
    return (int8_t)v;
}

/* g of a PRNG word for the normal prior and a mixture's components: its byte sum - 510 */
BITMCU_INLINE int32_t byte_sum(uint32_t w) {
    return (int32_t)((w & 255u) + ((w >> 8) & 255u) + ((w >> 16) & 255u) + (w >> 24)) - 510;
}

void bitmcu_sample_uniform(uint32_t *state, int8_t *z, uint16_t n, uint32_t scale) {
    for (uint16_t i = 0; i < n; i++) {
        const uint32_t w = bitmcu_xorshift32(state);
        z[i] = scale_latent((int32_t)((w & 255u) << 1) - 255, scale & 255u, 0);
    }
}

void bitmcu_sample_normal(uint32_t *state, int8_t *z, uint16_t n, uint32_t scale) {
    for (uint16_t i = 0; i < n; i++) {
        z[i] = scale_latent(byte_sum(bitmcu_xorshift32(state)), scale, 0);
    }
}

void bitmcu_sample_mixture(uint32_t *state, int8_t *z, uint16_t cls, const bitmcu_mixture *mix) {
    if (cls >= mix->n_classes) { /* no table to read (bitmcu_generate refuses the class) */
        return;
    }
    const uint32_t k_max = mix->components;
    const uint16_t *cum = mix->cum;
    uint32_t per_class = 0, at = 0; /* components * latent; the component's first value */
    for (uint32_t k = 0; k < k_max; k++) {
        per_class += mix->latent;
    }
    for (uint32_t c = 0; c < cls; c++) { /* no multiplier: the class's tables by adding */
        cum += k_max;
        at += per_class;
    }
    const uint32_t r = bitmcu_xorshift32(state) >> 16;
    for (uint32_t k = 0; k + 1u < k_max && cum[k] <= r; k++) {
        at += mix->latent;
    }
    for (uint16_t i = 0; i < mix->latent; i++) {
        z[i] = scale_latent(byte_sum(bitmcu_xorshift32(state)), mix->spread[at + i],
                            mix->centre[at + i]);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* decoders: latent + class -> image, band by band                                             */

/* A decoder layer's int8 biases, one per output row, stored just before its codes. */
/* A decoder layer's int8 biases, one per row of its weight matrix, just before its codes. */
BITMCU_INLINE const int8_t *layer_bias(const bitmcu_layer *L, uint32_t rows) {
    return (const int8_t *)(L->weights - rows);
}

/* clamp(((acc + 2^(s-1)) >> s) + bias, 0, act_max): a decoder layer's output function. */
BITMCU_INLINE uint32_t requant_bias(int32_t acc, uint32_t shift, int32_t bias, uint32_t act_max) {
    const int32_t v = ((acc + (int32_t)((1u << shift) >> 1u)) >> shift) + bias;
    return v < 0 ? 0u : (uint32_t)v > act_max ? act_max : (uint32_t)v;
}

/* The first fc layer's input: [relu(z), relu(-z), onehot(class) * CLASS_VALUE]. */
static void latent_act(const int8_t *z, uint16_t n, uint16_t cls, bitmcu_act *a, uint8_t *nz) {
    uint16_t k = 0;
    uint32_t prev = 0;
    int32_t sum = 0;
    for (uint32_t sign = 0; sign < 2u; sign++) {
        for (uint32_t i = 0; i < n; i++) {
            const int32_t v = sign ? -(int32_t)z[i] : (int32_t)z[i];
            if (v > 0) {
                k = nz_push(nz, k, &prev, sign * n + i, (uint32_t)v);
                sum += v;
            }
        }
    }
    k = nz_push(nz, k, &prev, 2u * n + cls, BITMCU_CLASS_VALUE);
    a->nz = nz;
    a->n_nz = k;
    a->sum = sum + BITMCU_CLASS_VALUE;
}

/* Requantized fc outputs to the next layer's nonzero list. */
static void requant_act(const bitmcu_layer *L, const int32_t *acc, uint32_t act_max,
                        bitmcu_act *a, uint8_t *nz) {
    const int8_t *bias = layer_bias(L, L->p.fc.n_out);
    uint16_t k = 0;
    uint32_t prev = 0;
    int32_t sum = 0;
    for (uint32_t i = 0; i < L->p.fc.n_out; i++) {
        const uint32_t v = requant_bias(acc[i], L->p.fc.shift, bias[i], act_max);
        if (v) {
            k = nz_push(nz, k, &prev, i, v);
            sum += (int32_t)v;
        }
    }
    a->nz = nz;
    a->n_nz = k;
    a->sum = sum;
}

/* Row y of stage L: per pixel the nonzero list of its 3x3 window (zeros outside) over its input
 * rows `src`, the fc kernel of the window, then each output row requantized into the rows `dst`
 * (2 * side wide with factor 2). No multiplication per pixel (the CH32V003 has no
 * multiplier): row and plane addresses are computed once per row and stepped. */
typedef struct {
    uint8_t *rows; /* channel 0's rows; channel c's kept rows follow at c * kept * width */
    uint16_t mask; /* row y lies in slot y & mask (0xffff: the whole map is kept) */
    uint16_t kept; /* rows kept per channel */
} ring;

/* The input rows of one row of a stage's pixels. */
typedef struct {
    const uint8_t *rows[3]; /* the window's rows in channel 0; NULL above or below the map */
    uint32_t plane;         /* from one channel's rows to the next's */
    uint32_t c_in, side;
} window;

/* Pixel x's window as the fc kernel's input: its nonzero list at nz, in a; inputs in the order
 * (channel, row, column), w->rows[dy] + x the window's middle pixel in row dy of channel 0.
 * Each entry's index step is the count of inputs since the last nonzero one (`gap`), so a zero
 * input costs an increment, and the columns outside the map only a step of the gap; a step over
 * 255 takes filler entries. A function of its own, so the stages' frame stays as small as the
 * kernel's chain needs (the static stack bound). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void window_nz(const window *w, uint32_t x, uint8_t *nz, bitmcu_act *a) {
    /* the window's columns in the map: lo..hi of x - 1, x, x + 1 */
    const uint32_t lo = x == 0u ? 1u : 0u, hi = x + 1u == w->side ? 1u : 2u;
    uint8_t *p = nz;
    uint32_t gap = 0;
    int32_t sum = 0;
    for (uint32_t c = 0, off = x; c < w->c_in; c++, off += w->plane) {
        for (uint32_t dy = 0; dy < 3u; dy++) {
            if (!w->rows[dy]) {
                gap += 3u;
                continue;
            }
            /* columns x - 1 + lo .. x - 1 + hi */
            const uint8_t *q = w->rows[dy] + (off + lo - 1u), *end = w->rows[dy] + (off + hi);
            gap += lo;
            while (q != end) {
                const uint32_t v = *q++;
                if (!v) {
                    gap++;
                    continue;
                }
                for (; gap > 255u; gap -= 255u, p += 2) { /* a filler: step 255, value 0 */
                    p[0] = 255u;
                    p[1] = 0u;
                }
                p[0] = (uint8_t)gap;
                p[1] = (uint8_t)v;
                p += 2;
                sum += (int32_t)v;
                gap = 1u;
            }
            gap += 2u - hi;
        }
    }
    a->nz = nz;
    a->n_nz = (uint16_t)((uint32_t)(p - nz) >> 1);
    a->sum = sum;
}

BITMCU_INLINE void stage_row(const bitmcu_layer *L, const ring *src, uint32_t y, uint32_t act_max,
                             int32_t *acc, uint8_t *nz, const ring *dst) {
    const uint32_t side = L->p.stage.side, c_in = L->p.stage.c_in, f = L->p.stage.factor;
    const int8_t *bias = layer_bias(L, L->p.stage.rows);
    const uint8_t *in = src->rows;
    const uint32_t mask = src->mask, plane = (uint32_t)src->kept * side;
    uint8_t *out = dst->rows;
    const uint32_t out_mask = dst->mask, out_kept = dst->kept;
    window w;
    w.plane = plane;
    w.c_in = c_in;
    w.side = side;
    for (uint32_t dy = 0; dy < 3u; dy++) {
        const uint32_t yy = y + dy - 1u; /* wraps above the map */
        w.rows[dy] = yy < side ? in + (yy & mask) * side : NULL;
    }
    const uint32_t out_side = f == 2u ? side << 1 : side;
    const uint32_t out_plane = out_kept * out_side;
    uint8_t *const out0 = out + ((f == 2u ? y << 1 : y) & out_mask) * out_side;
    uint8_t *const out1 = out + (((y << 1) + 1u) & out_mask) * out_side; /* f == 2 only */
    for (uint32_t x = 0; x < side; x++) {
        bitmcu_act a;
        window_nz(&w, x, nz, &a);
        L->kernel(L, &a, acc); /* a stage's rows and row_bytes lie where bitmcu_fc has them */
        if (f == 2u) { /* output rows 4c..4c+3: the 2x2 pixels of channel c at (2y, 2x) */
            uint8_t *p0 = out0 + (x << 1), *p1 = out1 + (x << 1);
            for (uint32_t r = 0; r < L->p.stage.rows; r += 4u, p0 += out_plane, p1 += out_plane) {
                p0[0] = (uint8_t)requant_bias(acc[r], L->p.stage.shift, bias[r], act_max);
                p0[1] = (uint8_t)requant_bias(acc[r + 1u], L->p.stage.shift, bias[r + 1u], act_max);
                p1[0] = (uint8_t)requant_bias(acc[r + 2u], L->p.stage.shift, bias[r + 2u], act_max);
                p1[1] = (uint8_t)requant_bias(acc[r + 3u], L->p.stage.shift, bias[r + 3u], act_max);
            }
        } else {
            uint8_t *p = out0 + x;
            for (uint32_t r = 0; r < L->p.stage.rows; r++, p += out_plane) {
                *p = (uint8_t)requant_bias(acc[r], L->p.stage.shift, bias[r], act_max);
            }
        }
    }
}

/* Whether stage k (of a decoder's stages) keeps all of its input map: the first map and small
 * ones; else 4 rows (the plan's rule, deploy/ops.py StageLayer.ring_bytes). */
BITMCU_INLINE uint32_t ring_whole(uint32_t k, uint32_t side) {
    return k == 0u || side <= 4u;
}

/* The input rows of stage k of a decoder's stages `first`: where the layer before it wrote them
 * (its planned buf), all of them or 4 (ring_whole). */
BITMCU_INLINE ring stage_ring(uint8_t *base, const bitmcu_layer *first, uint32_t k) {
    const uint32_t side = first[k].p.stage.side, whole = ring_whole(k, side);
    const ring r = {base + first[(int32_t)k - 1].buf, (uint16_t)(whole ? 0xffffu : 3u),
                    (uint16_t)(whole ? side : 4u)};
    return r;
}

const bitmcu_layer *bitmcu_step_fc_requant(bitmcu_state *s, const bitmcu_layer *at) {
    const bitmcu_model *model = s->model;
    const bitmcu_layer *L = at;
    const bitmcu_fc *P = &L->p.fc;
    int32_t *acc = (int32_t *)(void *)s->arena;
    uint8_t *nz = s->arena + model->nz_at;
    const uint32_t act_max = model->act_max;
    if (!L->kernel || P->n_in > model->max_in) {
        return NULL;
    }
    if (!P->chunk) { /* the next fc layer's input */
        if (P->n_out > model->max_out || P->n_out > model->max_in) {
            return NULL;
        }
        L->kernel(L, &s->act, acc);
        requant_act(L, acc, act_max, &s->act, nz);
        return L + 1;
    }
    /* chunk outputs at a time, requantized into bytes at its buf: the first stage's input rows
     * or, before another fc layer, a scratch the next layer's nonzero list is made from (the
     * accumulators never hold more than a chunk) */
    const uint32_t group = bitmcu_schemes[L->scheme < BITMCU_N_SCHEMES ? L->scheme : 0u].group;
    const uint32_t to_fc = L[1].op != BITMCU_OP_STAGE; /* L[1]: at worst the end marker */
    if (!group || P->chunk > model->max_out || P->chunk % group ||
        (uint32_t)L->buf + P->n_out > 4u * model->arena_words ||
        (to_fc && P->n_out > model->max_in)) {
        return NULL;
    }
    uint8_t *map = s->arena + L->buf;
    const int8_t *bias = layer_bias(L, P->n_out);
    bitmcu_layer view = *L;
    for (uint32_t o = 0; o < P->n_out; o += P->chunk) {
        view.p.fc.n_out = (uint16_t)(P->n_out - o < P->chunk ? P->n_out - o : P->chunk);
        view.weights = L->weights + o / group * P->row_bytes;
        L->kernel(&view, &s->act, acc);
        for (uint32_t i = 0; i < view.p.fc.n_out; i++) {
            map[o + i] = (uint8_t)requant_bias(acc[i], P->shift, bias[o + i], act_max);
        }
    }
    if (to_fc) {
        uint16_t k = 0;
        uint32_t prev = 0;
        int32_t sum = 0;
        for (uint32_t i = 0; i < P->n_out; i++) {
            if (map[i]) {
                k = nz_push(nz, k, &prev, i, map[i]);
                sum += (int32_t)map[i];
            }
        }
        s->act.nz = nz;
        s->act.n_nz = k;
        s->act.sum = sum;
    }
    return L + 1;
}

const bitmcu_layer *bitmcu_step_stages(bitmcu_state *s, const bitmcu_layer *at) {
    const bitmcu_model *model = s->model;
    const bitmcu_layer *const first = at;
    const uint32_t at0 = (uint32_t)(first - model->layers);
    const uint32_t n_st = model->n_layers - at0;
    if (at0 == 0u || n_st == 0u || n_st > BITMCU_MAX_STAGES) {
        return NULL;
    }
    /* the chain: stages whose sides and channels follow on; each one's input rows where the plan
     * put them (the buf of the layer before it) */
    uint16_t done[BITMCU_MAX_STAGES]; /* rows each stage has computed */
    uint32_t chans = first->p.stage.c_in, side = first->p.stage.side;
    for (uint32_t k = 0; k < n_st; k++) {
        const bitmcu_stage *P = &first[k].p.stage;
        if (first[k].op != BITMCU_OP_STAGE || !first[k].kernel || P->c_in != chans ||
            P->side != side || (P->factor != 1u && P->factor != 2u) ||
            (P->factor == 2u && (P->rows & 3u)) || 9u * P->c_in > model->max_in ||
            P->rows > model->max_out) {
            return NULL;
        }
        done[k] = 0;
        chans = P->factor == 2u ? (uint32_t)P->rows >> 2 : P->rows;
        side = side * P->factor;
    }
    const bitmcu_layer *last = first + n_st - 1u;
    const uint32_t band_rows = last->p.stage.factor;
    if (chans != 1u) { /* one channel: the image */
        return NULL;
    }
    uint8_t *const base = s->arena;
    int32_t *acc = (int32_t *)(void *)base;
    uint8_t *nz = base + model->nz_at;
    /* row by row: the last stage whose input rows are there computes its next row */
    const uint32_t top = n_st - 1u;
    while (done[top] < last->p.stage.side) {
        uint32_t k = top;
        while (k > 0u) {
            const uint32_t rows = first[k].p.stage.side;
            const uint32_t need = done[k] + 1u < rows ? done[k] + 1u : rows - 1u;
            if ((uint32_t)done[k - 1u] * first[k - 1u].p.stage.factor > need) {
                break;
            }
            k--;
        }
        const bitmcu_layer *L = first + k;
        const ring src = stage_ring(base, first, k);
        BITMCU_TRACE(2u, at0 + k);
        const ring band = {base + L->buf, (uint16_t)(band_rows - 1u), (uint16_t)band_rows};
        const ring dst = k < top ? stage_ring(base, first, k + 1u) : band;
        stage_row(L, &src, done[k], model->act_max, acc, nz, &dst); /* inlined: one call site */
        if (k == top) {
            s->out.image.emit(s->out.image.ctx, band.rows, (uint16_t)(done[k] * band_rows),
                              (uint16_t)band_rows, (uint16_t)side);
        }
        done[k]++;
    }
    return first + n_st;
}

/* ------------------------------------------------------------------------------------------ */
/* text: token -> embedding -> cells -> logits -> the next token                               */

const bitmcu_layer *bitmcu_step_embed(bitmcu_state *s, const bitmcu_layer *at) {
    const bitmcu_embed *P = &at->p.embed;
    const uint32_t token = s->out.text.token;
    if (token >= P->n_tokens || (uint32_t)at->buf + P->width > 4u * s->model->arena_words) {
        return NULL;
    }
    const uint8_t *row = at->weights;
    for (uint32_t t = 0; t < token; t++) { /* token * width without a multiplier */
        row += P->width;
    }
    uint8_t *out = s->arena + at->buf;
    for (uint32_t i = 0; i < P->width; i++) {
        out[i] = row[i];
    }
    return at + 1;
}

/* The nonzero list of n bytes v (indices from `first` on), appended to the list's k entries. */
static uint16_t nz_bytes(uint8_t *nz, uint16_t k, uint32_t *prev, uint32_t first, const uint8_t *v,
                         uint32_t n, int32_t *sum) {
    for (uint32_t i = 0; i < n; i++) {
        if (v[i]) {
            k = nz_push(nz, k, prev, first + i, v[i]);
            *sum += (int32_t)v[i];
        }
    }
    return k;
}

const bitmcu_layer *bitmcu_step_cell(bitmcu_state *s, const bitmcu_layer *at) {
    const bitmcu_model *model = s->model;
    const bitmcu_cell *P = &at->p.cell;
    int32_t *acc = (int32_t *)(void *)s->arena;
    uint8_t *nz = s->arena + model->nz_at;
    const uint32_t act_max = model->act_max, end = 4u * model->arena_words;
    if (at == model->layers || !at->kernel || P->n_in > model->max_in ||
        P->n_out > model->max_out || (uint32_t)P->n_x + P->n_out != P->n_in ||
        (uint32_t)at->buf + P->n_out > end || (uint32_t)at[-1].buf + P->n_x > end) {
        return NULL;
    }
    uint8_t *h = s->arena + at->buf;
    uint32_t prev = 0;
    int32_t sum = 0;
    uint16_t k = nz_bytes(nz, 0, &prev, 0, s->arena + at[-1].buf, P->n_x, &sum);
    k = nz_bytes(nz, k, &prev, P->n_x, h, P->n_out, &sum);
    s->act.nz = nz;
    s->act.n_nz = k;
    s->act.sum = sum;
    at->kernel(at, &s->act, acc); /* the fc kernels read its shared layout */
    const int8_t *bias = layer_bias(at, P->n_out);
    for (uint32_t i = 0; i < P->n_out; i++) {
        h[i] = (uint8_t)requant_bias(acc[i], P->shift, bias[i], act_max);
    }
    prev = 0;
    sum = 0;
    s->act.n_nz = nz_bytes(nz, 0, &prev, 0, h, P->n_out, &sum); /* the next row's input */
    s->act.sum = sum;
    return at + 1;
}

/* Weight of logit d steps below the largest: table[d], 0 beyond the table. */
BITMCU_INLINE uint32_t exp_weight(const uint8_t *table, uint32_t len, uint32_t d) {
    return d < len ? (uint32_t)table[2u * d] | (uint32_t)table[2u * d + 1u] << 8 : 0u;
}

const bitmcu_layer *bitmcu_step_sample(bitmcu_state *s, const bitmcu_layer *at) {
    const bitmcu_sample *P = &at->p.sample;
    const int32_t *acc = (const int32_t *)(const void *)s->arena;
    const uint32_t n = P->n_tokens, len = P->table_len, shift = P->shift;
    if (!s->out.text.rng || n == 0u || n > s->model->max_out || len == 0u || shift > 31u) {
        return NULL;
    }
    int32_t m = acc[0];
    for (uint32_t i = 1; i < n; i++) {
        m = acc[i] > m ? acc[i] : m;
    }
    uint32_t total = 0; /* at most 255 tokens of 65535 */
    for (uint32_t i = 0; i < n; i++) {
        total += exp_weight(at->weights, len, ((uint32_t)m - (uint32_t)acc[i]) >> shift);
    }
    if (total == 0u) {
        return NULL;
    }
    uint32_t bits = 0, r;
    while ((total - 1u) >> bits) {
        bits++;
    }
    do { /* the top bits of a PRNG word, drawn again while beyond the total */
        const uint32_t w = bitmcu_xorshift32(s->out.text.rng);
        r = bits ? w >> (32u - bits) : 0u;
    } while (r >= total);
    uint32_t c = 0, i = 0;
    for (; i + 1u < n; i++) {
        c += exp_weight(at->weights, len, ((uint32_t)m - (uint32_t)acc[i]) >> shift);
        if (c > r) {
            break;
        }
    }
    s->out.text.token = (uint16_t)i;
    return at + 1;
}

/* ------------------------------------------------------------------------------------------ */
/* the walk over the table and its entry points                                               */

/* FC of a classifier. */
const bitmcu_layer *bitmcu_step_fc(bitmcu_state *s, const bitmcu_layer *at) {
    const bitmcu_model *model = s->model;
    const bitmcu_layer *L = at;
    const uint32_t bias_unit = model->bias_unit;
    int32_t *acc = (int32_t *)(void *)s->arena; /* the plan: accumulators at 0 (max_out) */
    if (s->pixels) { /* the image, or the front end's features: ShiftNorm them first */
        const uint16_t n = model->n_front ? model->n_features : model->n_input;
        if (n + bias_unit > model->max_in) {
            return NULL;
        }
        bitmcu_shiftnorm(s, NULL, s->pixels, n);
        s->pixels = NULL;
    }
    if (!L->kernel || L->p.fc.n_in > model->max_in || L->p.fc.n_out > model->max_out) {
        return NULL;
    }
    L->kernel(L, &s->act, acc);
    if (L->p.fc.relu) {
        if (L->p.fc.n_out + bias_unit > model->max_in) {
            return NULL;
        }
        bitmcu_shiftnorm(s, acc, NULL, L->p.fc.n_out);
    }
    return L + 1;
}

/* What both entry points trust of the model table: its magic, version and kind; the arena. */
static bitmcu_status begin(const bitmcu_model *model, uint32_t kind, size_t arena_words) {
    if (model->magic != BITMCU_MAGIC) {
        return BITMCU_ERR_MAGIC;
    }
    if (model->version != BITMCU_FORMAT_VERSION) {
        return BITMCU_ERR_VERSION;
    }
    if (model->kind != kind) {
        return BITMCU_ERR_MODEL;
    }
    return arena_words < model->arena_words ? BITMCU_ERR_ARENA : BITMCU_OK;
}

/* The one walk: each row's op function in turn, each moving on past the rows it ran (inlined
 * into both entry points: a firmware links one of them, and one stack frame fewer). */
BITMCU_INLINE bitmcu_status run_ops(bitmcu_state *s) {
    const bitmcu_layer *L = s->model->layers;
    while (L->op) { /* to the table's end marker (bitmcu_check: where n_layers says) */
        if (!L->step) {
            return BITMCU_ERR_LAYER;
        }
        BITMCU_TRACE(2u, (uint32_t)(L - s->model->layers));
        L = L->step(s, L);
        if (!L) {
            return BITMCU_ERR_LAYER;
        }
    }
    return BITMCU_OK;
}

BITMCU_COLD
bitmcu_status bitmcu_run(const bitmcu_model *model, const uint8_t *input, int32_t *arena,
                         size_t arena_words, int32_t *logits, uint16_t *pred) {
    if (!model || !input || !arena || !logits) {
        return BITMCU_ERR_ARG;
    }
    bitmcu_status st = begin(model, BITMCU_KIND_CLASSIFIER, arena_words);
    if (st != BITMCU_OK) {
        return st;
    }
    if (model->n_classes > model->max_out) {
        return BITMCU_ERR_LAYER;
    }
    bitmcu_state s = {.model = model, .arena = (uint8_t *)arena, .pixels = input};
    st = run_ops(&s);
    if (st != BITMCU_OK) {
        return st;
    }
    uint16_t best = 0;
    for (uint16_t i = 0; i < model->n_classes; i++) {
        logits[i] = arena[i];
        best = arena[i] > arena[best] ? i : best;
    }
    if (pred) {
        *pred = best;
    }
    return BITMCU_OK;
}

bitmcu_status bitmcu_generate(const bitmcu_model *model, const int8_t *z, uint16_t cls,
                              int32_t *arena, size_t arena_words, bitmcu_emit_fn emit,
                              void *ctx) {
    if (!model || !z || !arena || !emit) {
        return BITMCU_ERR_ARG;
    }
    const bitmcu_status st = begin(model, BITMCU_KIND_DECODER, arena_words);
    if (st != BITMCU_OK) {
        return st;
    }
    const uint32_t n_in = 2u * model->n_input + model->n_classes;
    if (cls >= model->n_classes || model->layers[0].p.fc.n_in != n_in || n_in > model->max_in) {
        return BITMCU_ERR_LAYER;
    }
    bitmcu_state s = {.model = model, .arena = (uint8_t *)arena, .out.image = {emit, ctx}};
    latent_act(z, model->n_input, cls, &s.act, s.arena + model->nz_at);
    return run_ops(&s);
}

bitmcu_status bitmcu_text_begin(const bitmcu_model *model, int32_t *arena, size_t arena_words) {
    if (!model || !arena) {
        return BITMCU_ERR_ARG;
    }
    const bitmcu_status st = begin(model, BITMCU_KIND_TEXT, arena_words);
    if (st != BITMCU_OK) {
        return st;
    }
    uint8_t *a = (uint8_t *)arena;
    for (const bitmcu_layer *L = model->layers; L->op; L++) {
        if (L->op == BITMCU_OP_CELL) {
            if ((uint32_t)L->buf + L->p.cell.n_out > 4u * model->arena_words) {
                return BITMCU_ERR_LAYER;
            }
            for (uint32_t i = 0; i < L->p.cell.n_out; i++) {
                a[L->buf + i] = 0u;
            }
        }
    }
    return BITMCU_OK;
}

bitmcu_status bitmcu_text_step(const bitmcu_model *model, uint16_t token, uint32_t *rng,
                               int32_t *arena, size_t arena_words, uint16_t *next) {
    if (!model || !rng || !arena || !next) {
        return BITMCU_ERR_ARG;
    }
    const bitmcu_status st = begin(model, BITMCU_KIND_TEXT, arena_words);
    if (st != BITMCU_OK) {
        return st;
    }
    if (token >= model->n_input) {
        return BITMCU_ERR_ARG;
    }
    bitmcu_state s = {.model = model, .arena = (uint8_t *)arena, .out.text = {rng, token}};
    const bitmcu_status run = run_ops(&s);
    *next = s.out.text.token;
    return run;
}

bitmcu_status bitmcu_generate_text(const bitmcu_model *model, uint32_t *rng, uint8_t *out,
                                   uint16_t max_len, uint16_t *n_out, int32_t *arena,
                                   size_t arena_words) {
    if (!out || !n_out) {
        return BITMCU_ERR_ARG;
    }
    *n_out = 0;
    bitmcu_status st = bitmcu_text_begin(model, arena, arena_words);
    uint16_t token = 0;
    while (st == BITMCU_OK && *n_out < max_len) {
        st = bitmcu_text_step(model, token, rng, arena, arena_words, &token);
        if (st != BITMCU_OK || token == 0u) {
            break;
        }
        out[(*n_out)++] = (uint8_t)token;
    }
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* table check (bitmcu_check) and checksums; mirrored by bitmcu/deploy/codegen.py's table_sums */

/* Each scheme's fc kernel (only bitmcu_check reads this table: a firmware that does not call it
 * links only the kernels its model's table names). */
static const bitmcu_kernel scheme_kernels[BITMCU_N_SCHEMES] = {
    [BITMCU_SCHEME_BINARY] = bitmcu_fc_binary,   [BITMCU_SCHEME_BINARY_BALANCED] = bitmcu_fc_binary,
    [BITMCU_SCHEME_TERNARY] = bitmcu_fc_ternary, [BITMCU_SCHEME_2BITSYM] = bitmcu_fc_2bitsym,
    [BITMCU_SCHEME_4BITSYM] = bitmcu_fc_4bitsym, [BITMCU_SCHEME_4BIT] = bitmcu_fc_4bit,
    [BITMCU_SCHEME_FP130] = bitmcu_fc_fp130,     [BITMCU_SCHEME_NF4] = bitmcu_fc_nf4,
    [BITMCU_SCHEME_8BIT] = bitmcu_fc_8bit,
};

/* Rows sharing their packed bytes (1: none; 0: an unknown scheme). */
static uint32_t row_group(uint32_t scheme) {
    return scheme < BITMCU_N_SCHEMES ? bitmcu_schemes[scheme].group : 0u;
}

/* A layer's weights: their size against its scheme and shape (n_rows rows of k weights,
 * row_bytes per row group), its kernel, its shift; bias: bytes before the codes. */
static bitmcu_status check_weights(const bitmcu_layer *L, uint32_t k, uint32_t n_rows,
                                   uint32_t row_bytes, uint32_t shift, uint32_t bias) {
    const uint32_t group = row_group(L->scheme);
    if (group == 0u) {
        return BITMCU_ERR_LAYER;
    }
    const uint32_t per = bitmcu_schemes[L->scheme].per;
    const uint32_t rb = (k + per - 1u) / per, rows = (n_rows + group - 1u) / group;
    const int conv = L->op == BITMCU_OP_CONV1 || L->op == BITMCU_OP_DW;
    if (rb == 0u || row_bytes != rb || L->nbytes != bias + rows * rb || !L->weights ||
        (L->scheme == BITMCU_SCHEME_TERNARY && k > 1024u) || /* its kernel's i / 5 */
        n_rows == 0u || shift > 31u ||
        (conv ? L->kernel != NULL : L->kernel != scheme_kernels[L->scheme])) {
        return BITMCU_ERR_LAYER;
    }
    return BITMCU_OK;
}

/* Two byte ranges [a, a + na) and [b, b + nb) share a byte. */
static int overlap(uint32_t a, uint32_t na, uint32_t b, uint32_t nb) {
    return a < b + nb && b < a + na;
}

/* The plan's fixed buffers: the accumulators at 0, the nonzero list at nz_at after them, and
 * `lo`, where the layers' buffers may start (after the list, or after a CNN's features). */
static bitmcu_status check_arena(const bitmcu_model *m, uint32_t *lo) {
    const uint32_t end = 4u * m->arena_words, nz_end = (uint32_t)m->nz_at + 2u * m->max_in;
    *lo = nz_end;
    if (m->nz_at < 4u * m->max_out || nz_end > end) {
        return BITMCU_ERR_MODEL;
    }
    if (m->n_front) {
        *lo = (uint32_t)m->feat_at + m->n_features;
        if (m->feat_at < nz_end || *lo > end) {
            return BITMCU_ERR_MODEL;
        }
    } else if (m->feat_at) {
        return BITMCU_ERR_MODEL;
    }
    return BITMCU_OK;
}

/* The front end's chain (sides, channels, multipliers; the 8-bit entry point takes 8-bit
 * convolutions only) and its planned maps: each inside the arena after the features, apart from
 * its input, and a map that feeds a depth multiplier (kept while its K channels are computed)
 * apart from every other. */
static bitmcu_status check_front(const bitmcu_model *m, uint32_t lo) {
    const bitmcu_layer *layers = m->layers;
    const uint32_t n_front = m->n_front, any_scheme = layers[0].step == bitmcu_front_end;
    uint32_t side = layers[0].p.map.side, channels = 1;
    uint32_t size[BITMCU_MAX_FRONT], kept[BITMCU_MAX_FRONT];
    if (side * side != m->n_input) {
        return BITMCU_ERR_LAYER;
    }
    for (uint32_t l = 0; l < n_front; l++) {
        const bitmcu_layer *L = &layers[l];
        const bitmcu_map *P = &L->p.map;
        const uint32_t out_side = L->op == BITMCU_OP_POOL ? side / 2u : side - 2u;
        const uint32_t mult = L->op == BITMCU_OP_DW ? P->mult : 1u;
        if (P->side != side || side < 3u || side > BITMCU_CONV_MAX_SIDE ||
            (L->op == BITMCU_OP_CONV1) != (l == 0u) || mult == 0u ||
            (l && P->channels != channels * mult) ||
            (L->op != BITMCU_OP_POOL && L->op != BITMCU_OP_CONV1 && L->op != BITMCU_OP_DW) ||
            (!any_scheme && L->op != BITMCU_OP_POOL && L->scheme != BITMCU_SCHEME_8BIT)) {
            return BITMCU_ERR_LAYER;
        }
        size[l] = out_side * out_side;
        kept[l] = l + 1u < n_front && layers[l + 1u].op == BITMCU_OP_DW &&
                  layers[l + 1u].p.map.mult > 1u;
        if (L->buf < lo || (uint32_t)L->buf + size[l] > 4u * m->arena_words) {
            return BITMCU_ERR_LAYER;
        }
        side = out_side;
        channels = P->channels;
    }
    if (channels * side * side != m->n_features) {
        return BITMCU_ERR_LAYER;
    }
    for (uint32_t l = 0; l < n_front; l++) {
        for (uint32_t k = l + 1u; k < n_front; k++) {
            if (overlap(layers[l].buf, size[l], layers[k].buf, size[k]) &&
                (kept[l] || kept[k] || k == l + 1u)) {
                return BITMCU_ERR_LAYER;
            }
        }
    }
    return BITMCU_OK;
}

/* What flows from row to row as bitmcu_check walks the table the way the engine will: the next
 * row's input, a map (side > 0: n channels of side x side) or a vector of n values; and where
 * the rows' buffers may start (after the nonzero list, or after a CNN's features). */
typedef struct {
    uint32_t n;
    uint32_t side;
    uint32_t lo;
} check_flow;

/* The front end (a macro-op): the table's first n_front rows, CONV1 then DW and POOL, each row's
 * fields, their chain from the image and their planned maps; its output is the features, which
 * bitmcu_step_fc ShiftNorms into the first fc layer's input. */
static bitmcu_status check_map_ops(const bitmcu_model *m, const bitmcu_layer *at, check_flow *x,
                                   const bitmcu_layer **next) {
    const uint32_t n_front = m->n_front;
    if (at != m->layers || n_front == 0u) {
        return BITMCU_ERR_LAYER;
    }
    for (uint32_t l = 0; l < n_front; l++) {
        const bitmcu_layer *L = &at[l];
        const bitmcu_map *P = &L->p.map;
        if (L->op == BITMCU_OP_POOL) {
            if (L->scheme || L->weights || L->kernel || L->nbytes || P->shift || P->zero ||
                P->row_bytes || P->mult) {
                return BITMCU_ERR_LAYER;
            }
        } else if ((L->op != BITMCU_OP_CONV1 && L->op != BITMCU_OP_DW) || P->zero ||
                   check_weights(L, 9u, P->channels, P->row_bytes, P->shift, 0u) != BITMCU_OK ||
                   (L->op == BITMCU_OP_CONV1 ? P->mult != 0u : P->mult == 0u)) {
            return BITMCU_ERR_LAYER;
        }
    }
    if (check_front(m, x->lo) != BITMCU_OK) {
        return BITMCU_ERR_LAYER;
    }
    x->n = m->n_features;
    x->side = 0;
    *next = at + n_front;
    return BITMCU_OK;
}

/* An fc layer: its inputs are what the row before it made (and the bias unit). A classifier's
 * ShiftNorms its outputs for the next (relu) or, the table's last, leaves the logits; a
 * decoder's requantizes them by its shift and biases into the next one's input or, before a
 * stage, into the stage's first map, chunk outputs at a time (bitmcu_step_fc_requant tells
 * the two by its chunk). */
static bitmcu_status check_fc(const bitmcu_model *m, const bitmcu_layer *L, check_flow *x,
                              const bitmcu_layer **next) {
    const bitmcu_fc *P = &L->p.fc;
    if (x->side || P->n_in != x->n + m->bias_unit || (uint32_t)(L - m->layers) < m->n_front) {
        return BITMCU_ERR_LAYER; /* (a row the front end will run is no fc layer) */
    }
    *next = L + 1;
    x->n = P->n_out;
    if (m->kind == BITMCU_KIND_TEXT) { /* the logits, which the sampler after it reads */
        return P->relu || P->chunk || P->shift || L->buf || P->n_out != m->n_classes ||
                       P->n_out > m->max_out || L[1].op != BITMCU_OP_SAMPLE ||
                       check_weights(L, P->n_in, P->n_out, P->row_bytes, 0u, 0u) != BITMCU_OK
                   ? BITMCU_ERR_LAYER
                   : BITMCU_OK;
    }
    if (m->kind == BITMCU_KIND_CLASSIFIER) {
        const uint32_t last = L + 1 == m->layers + m->n_layers;
        return P->relu != (last ? 0u : 1u) || P->chunk || P->shift || L->buf ||
                       P->n_out > m->max_out ||
                       check_weights(L, P->n_in, P->n_out, P->row_bytes, P->shift, 0u) !=
                           BITMCU_OK ||
                       (last && P->n_out != m->n_classes) ||
                       (!last && P->n_out + m->bias_unit > m->max_in)
                   ? BITMCU_ERR_LAYER
                   : BITMCU_OK;
    }
    const bitmcu_layer *stage = L[1].op == BITMCU_OP_STAGE ? L + 1 : NULL; /* L[1]: at worst
                                                                            * the end marker */
    const uint32_t chunk = P->chunk ? P->chunk : P->n_out, group = row_group(L->scheme);
    if (P->relu != 1u || (stage && !P->chunk) || (!P->chunk && L->buf) ||
        (!stage && P->n_out > m->max_in) || !group || chunk > m->max_out || chunk % group ||
        check_weights(L, P->n_in, P->n_out, P->row_bytes, P->shift, P->n_out) != BITMCU_OK) {
        return BITMCU_ERR_LAYER;
    }
    if (!stage && P->chunk && /* its scratch: after the nonzero list, inside the arena */
        (L->buf < x->lo || (uint32_t)L->buf + P->n_out > 4u * m->arena_words)) {
        return BITMCU_ERR_MODEL;
    }
    if (stage) { /* the stage's first map, the whole of it */
        const bitmcu_stage *S = &stage->p.stage;
        if (P->n_out != (uint32_t)S->c_in * S->side * S->side || S->side == 0u) {
            return BITMCU_ERR_LAYER;
        }
        x->n = S->c_in;
        x->side = S->side;
    }
    return BITMCU_OK;
}

/* A decoder's stages (a macro-op): every row left, each taking the map the one before it made
 * (the first: the fc layer's), down to one channel; their planned buffers (each stage's input
 * rows, the band) inside the arena after the nonzero list and apart. */
static bitmcu_status check_stages(const bitmcu_model *m, const bitmcu_layer *first, check_flow *x,
                                  const bitmcu_layer **next) {
    const uint32_t n_st = m->n_layers - (uint32_t)(first - m->layers);
    uint32_t chans = x->n, side = x->side;
    if (side == 0u || first == m->layers || n_st == 0u || n_st > BITMCU_MAX_STAGES) {
        return BITMCU_ERR_LAYER;
    }
    uint32_t at[BITMCU_MAX_STAGES + 1u], size[BITMCU_MAX_STAGES + 1u];
    for (uint32_t s = 0; s < n_st; s++) {
        const bitmcu_layer *L = first + s;
        const bitmcu_stage *P = &L->p.stage;
        const uint32_t kept = ring_whole(s, side) ? side : 4u;
        if (L->op != BITMCU_OP_STAGE || P->c_in != chans || P->side != side || side == 0u ||
            (P->factor != 1u && P->factor != 2u) || (P->factor == 2u && (P->rows & 3u)) ||
            9u * P->c_in > m->max_in || P->rows > m->max_out ||
            check_weights(L, 9u * P->c_in, P->rows, P->row_bytes, P->shift, P->rows) !=
                BITMCU_OK) {
            return BITMCU_ERR_LAYER;
        }
        at[s] = L[-1].buf; /* the stage's input rows: written by the layer before it */
        size[s] = chans * kept * side;
        chans = P->factor == 2u ? (uint32_t)P->rows >> 2 : P->rows;
        side *= P->factor;
        at[n_st] = L->buf; /* the band: the last stage's rows of output pixels */
        size[n_st] = P->factor * side;
    }
    const uint32_t band_acc = at[n_st] < m->nz_at; /* the band in the accumulators: */
    if (band_acc && (at[n_st] < 4u * first[n_st - 1u].p.stage.rows ||
                     at[n_st] + size[n_st] > m->nz_at)) { /* after the last stage's own */
        return BITMCU_ERR_MODEL;
    }
    for (uint32_t i = 0; i <= n_st; i++) {
        if ((i < n_st || !band_acc) && (at[i] < x->lo || at[i] + size[i] > 4u * m->arena_words)) {
            return BITMCU_ERR_MODEL;
        }
        for (uint32_t k = i + 1u; k <= n_st; k++) {
            if (overlap(at[i], size[i], at[k], size[k])) {
                return BITMCU_ERR_MODEL;
            }
        }
    }
    x->n = chans;
    x->side = side;
    *next = first + n_st;
    return BITMCU_OK;
}

/* A text model's state buffer [buf, buf + n) (the embedding's, a cell's): inside the arena
 * after the nonzero list, apart from every buffer of the rows before it (all state buffers). */
static bitmcu_status check_state(const bitmcu_model *m, const bitmcu_layer *L, uint32_t n,
                                 const check_flow *x) {
    if (L->buf < x->lo || (uint32_t)L->buf + n > 4u * m->arena_words) {
        return BITMCU_ERR_MODEL;
    }
    for (const bitmcu_layer *B = m->layers; B < L; B++) {
        const uint32_t nb = B->op == BITMCU_OP_EMBED ? B->p.embed.width : B->p.cell.n_out;
        if (overlap(L->buf, n, B->buf, nb)) {
            return BITMCU_ERR_MODEL;
        }
    }
    return BITMCU_OK;
}

/* The embedding: the table's first row, one row of `width` bytes per token. */
static bitmcu_status check_embed(const bitmcu_model *m, const bitmcu_layer *L, check_flow *x,
                                 const bitmcu_layer **next) {
    const bitmcu_embed *P = &L->p.embed;
    if (L != m->layers || P->n_tokens != x->n || P->width == 0u || L->scheme || L->kernel ||
        !L->weights || P->zero || P->zero_shift || P->zero_bytes || P->zero_last ||
        L->nbytes != (uint32_t)P->n_tokens * P->width) {
        return BITMCU_ERR_LAYER;
    }
    x->n = P->width;
    *next = L + 1;
    return check_state(m, L, P->width, x);
}

/* A cell: the row before it an embedding or a cell (its input, n_x bytes at that row's buf). */
static bitmcu_status check_cell(const bitmcu_model *m, const bitmcu_layer *L, check_flow *x,
                                const bitmcu_layer **next) {
    const bitmcu_cell *P = &L->p.cell;
    if (L == m->layers || (L[-1].op != BITMCU_OP_EMBED && L[-1].op != BITMCU_OP_CELL) ||
        P->n_x != x->n || (uint32_t)P->n_x + P->n_out != P->n_in || P->zero ||
        P->n_in > m->max_in || P->n_out > m->max_out ||
        check_weights(L, P->n_in, P->n_out, P->row_bytes, P->shift, P->n_out) != BITMCU_OK) {
        return BITMCU_ERR_LAYER;
    }
    x->n = P->n_out;
    *next = L + 1;
    return check_state(m, L, P->n_out, x);
}

/* The sampler: the table's last row, after the logits; its exp table (uint16) starts nonzero,
 * so that the weights' sum is (and the rejection loop ends). */
static bitmcu_status check_sample(const bitmcu_model *m, const bitmcu_layer *L, check_flow *x,
                                  const bitmcu_layer **next) {
    const bitmcu_sample *P = &L->p.sample;
    if (L == m->layers || L[-1].op != BITMCU_OP_FC || L + 1 != m->layers + m->n_layers ||
        P->n_tokens != x->n || P->n_tokens != m->n_classes || P->table_len == 0u ||
        P->table_len > 255u || P->shift > 31u || L->scheme || L->kernel || L->buf ||
        !L->weights || P->zero || P->zero_bytes || P->zero_last ||
        L->nbytes != 2u * P->table_len || (L->weights[0] | L->weights[1]) == 0u) {
        return BITMCU_ERR_LAYER;
    }
    x->n = 1u;
    *next = L + 1;
    return BITMCU_OK;
}

/* What bitmcu_check knows of each op (ids: bitmcu_op): the function that runs it in a model of
 * each kind (NULL: the kind has no such op) and another that may (the 8-bit front end), and its
 * check (a macro-op's checks all of its rows). Only bitmcu_check reads it. */
typedef bitmcu_status (*check_fn)(const bitmcu_model *m, const bitmcu_layer *at, check_flow *x,
                                  const bitmcu_layer **next);
typedef struct {
    bitmcu_step_fn step[3]; /* by bitmcu_kind: classifier, decoder, text */
    bitmcu_step_fn alt;
    check_fn check;
} bitmcu_op_traits;
#define BITMCU_N_OPS 9u
static const bitmcu_op_traits op_traits[BITMCU_N_OPS] = {
    [BITMCU_OP_FC] = {.step = {bitmcu_step_fc, bitmcu_step_fc_requant, bitmcu_step_fc},
                      .check = check_fc},
    [BITMCU_OP_CONV1] = {.step = {bitmcu_front_end, NULL}, .alt = bitmcu_front_end_8bit,
                         .check = check_map_ops},
    [BITMCU_OP_DW] = {.step = {bitmcu_front_end, NULL}, .alt = bitmcu_front_end_8bit,
                      .check = check_map_ops},
    [BITMCU_OP_POOL] = {.step = {bitmcu_front_end, NULL}, .alt = bitmcu_front_end_8bit,
                        .check = check_map_ops},
    [BITMCU_OP_STAGE] = {.step = {NULL, bitmcu_step_stages}, .check = check_stages},
    [BITMCU_OP_EMBED] = {.step = {NULL, NULL, bitmcu_step_embed}, .check = check_embed},
    [BITMCU_OP_CELL] = {.step = {NULL, NULL, bitmcu_step_cell}, .check = check_cell},
    [BITMCU_OP_SAMPLE] = {.step = {NULL, NULL, bitmcu_step_sample}, .check = check_sample},
};

/* Row l's function is its op's in a model of this kind (the front end's rows: all the same). */
static int step_ok(const bitmcu_model *m, uint32_t l) {
    const bitmcu_layer *L = &m->layers[l];
    const bitmcu_op_traits *T = &op_traits[L->op]; /* op < BITMCU_N_OPS: checked by the walk */
    return L->step && (L->step == T->step[m->kind] || L->step == T->alt) &&
           (l < m->n_front ? L->step == m->layers[0].step : 1);
}

/* The model's fields for its kind and the walk's input: a classifier's image (n_input pixels;
 * the front end checks it as a map), a decoder's [relu(z), relu(-z), onehot(class)]. */
static bitmcu_status check_input(const bitmcu_model *m, check_flow *x) {
    const uint32_t n_front = m->n_front;
    if (check_arena(m, &x->lo) != BITMCU_OK || m->n_classes == 0u || n_front >= m->n_layers ||
        n_front > BITMCU_MAX_FRONT || m->bias_unit > 1u || (!n_front && m->n_features != 0u)) {
        return BITMCU_ERR_MODEL;
    }
    x->side = 0;
    if (m->kind == BITMCU_KIND_TEXT) { /* the token read: one of n_input (= n_classes) */
        x->n = m->n_input;
        return n_front || m->bias_unit || m->n_input < 2u || m->n_input != m->n_classes ||
                       m->n_classes > m->max_out
                   ? BITMCU_ERR_MODEL
                   : BITMCU_OK;
    }
    if (m->kind == BITMCU_KIND_DECODER) {
        x->n = 2u * m->n_input + m->n_classes;
        return n_front || m->bias_unit || m->n_input == 0u || x->n > m->max_in ? BITMCU_ERR_MODEL
                                                                               : BITMCU_OK;
    }
    x->n = n_front ? m->n_features : m->n_input;
    return m->n_classes > m->max_out || x->n + m->bias_unit > m->max_in ? BITMCU_ERR_MODEL
                                                                        : BITMCU_OK;
}

/* The table walked as the engine will: each row (a macro-op's rows together) by its op's check,
 * each op one the model's kind runs; at the end a classifier's logits (a vector: the last fc
 * layer's check counts them) or a decoder's image (one channel). */
static bitmcu_status check_walk(const bitmcu_model *m) {
    check_flow x;
    bitmcu_status st = check_input(m, &x);
    const bitmcu_layer *L = m->layers, *const end = L + m->n_layers;
    while (st == BITMCU_OK && L < end) {
        if (L->op >= BITMCU_N_OPS || !op_traits[L->op].check || !op_traits[L->op].step[m->kind]) {
            return BITMCU_ERR_LAYER;
        }
        st = op_traits[L->op].check(m, L, &x, &L);
    }
    if (st != BITMCU_OK) {
        return st;
    }
    if (m->kind == BITMCU_KIND_DECODER ? x.side == 0u || x.n != 1u
        : m->kind == BITMCU_KIND_TEXT  ? m->layers[m->n_layers - 1u].op != BITMCU_OP_SAMPLE
                                       : x.side != 0u) {
        return BITMCU_ERR_LAYER;
    }
    for (uint32_t l = 0; l < m->n_layers; l++) { /* the functions the engine's walk will call */
        if (!step_ok(m, l)) {
            return BITMCU_ERR_LAYER;
        }
    }
    return BITMCU_OK;
}

/* FNV-1a, 32 bits; the multiplication by its prime as shifts and adds (no multiplier needed). */
static uint32_t fnv_byte(uint32_t h, uint32_t b) {
    h ^= b & 0xFFu;
    return h + (h << 1) + (h << 4) + (h << 7) + (h << 8) + (h << 24);
}

static uint32_t fnv_word(uint32_t h, uint32_t v) {
    for (uint32_t i = 0; i < 32u; i += 8u) {
        h = fnv_byte(h, v >> i);
    }
    return h;
}

#define BITMCU_FNV_START 0x811C9DC5u

void bitmcu_sums(const bitmcu_model *m, uint32_t *table_sum, uint32_t *weight_sum) {
    const uint32_t fields[16] = {m->magic, m->version, m->n_layers, m->config_hash, m->n_input,
                                 m->n_classes, m->max_out, m->max_in, m->n_features, m->nz_at,
                                 m->feat_at, m->act_max, m->n_front, m->bias_unit, m->kind,
                                 m->arena_words};
    uint32_t t = BITMCU_FNV_START, w = BITMCU_FNV_START;
    for (uint32_t i = 0; i < 16u; i++) {
        t = fnv_word(t, fields[i]);
    }
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const bitmcu_layer *L = &m->layers[l];
        const bitmcu_fc *P = &L->p.fc; /* the parameters' six numbers, as every op lays them out */
        const uint32_t lf[10] = {L->op, L->scheme, P->relu, P->shift, P->n_in, P->n_out,
                                 P->row_bytes, P->chunk, L->buf, L->nbytes};
        for (uint32_t i = 0; i < 10u; i++) {
            t = fnv_word(t, lf[i]);
        }
        if (L->nbytes) {
            /* a decoder's layers and a cell have their biases before their codes */
            const uint32_t biased = m->kind == BITMCU_KIND_DECODER || L->op == BITMCU_OP_CELL;
            const uint8_t *p = L->weights - (biased ? P->n_out : 0u);
            for (uint32_t i = 0; i < L->nbytes; i++) {
                w = fnv_byte(w, p[i]);
            }
        }
    }
    *table_sum = t;
    *weight_sum = w;
}

bitmcu_status bitmcu_check(const bitmcu_model *m, size_t n_entries, uint32_t flags) {
    if (!m) {
        return BITMCU_ERR_ARG;
    }
    if (m->magic != BITMCU_MAGIC) {
        return BITMCU_ERR_MAGIC;
    }
    if (m->version != BITMCU_FORMAT_VERSION) {
        return BITMCU_ERR_VERSION;
    }
    if (!m->layers || m->n_layers == 0u || m->n_layers > BITMCU_MAX_LAYERS ||
        (size_t)m->n_layers + 1u != n_entries || m->act_max == 0u ||
        m->kind > BITMCU_KIND_TEXT) {
        return BITMCU_ERR_MODEL;
    }
    /* the end marker must be where n_layers (now known to be n_entries - 1) says */
    for (uint32_t l = 0; l <= m->n_layers; l++) {
        const uint32_t end = m->layers[l].op == 0u;
        if (end != (l == m->n_layers)) {
            return BITMCU_ERR_MODEL;
        }
    }
    const bitmcu_status st = check_walk(m);
    if (st != BITMCU_OK || !(flags & BITMCU_CHECK_SUMS)) {
        return st;
    }
    uint32_t t, w;
    bitmcu_sums(m, &t, &w); /* the fields are consistent: every weight read is in bounds */
    return t == m->table_sum && w == m->weight_sum ? BITMCU_OK : BITMCU_ERR_CHECKSUM;
}

/* classes x components of a mixture, by adding (as the sampler finds a class's tables) */
static uint32_t mixture_entries(const bitmcu_mixture *mix) {
    uint32_t entries = 0;
    for (uint32_t c = 0; c < mix->n_classes; c++) {
        entries += mix->components;
    }
    return entries;
}

uint32_t bitmcu_mixture_sum(const bitmcu_mixture *mix) {
    const uint32_t components = mixture_entries(mix);
    uint32_t h = BITMCU_FNV_START, values = 0;
    h = fnv_word(h, mix->n_classes);
    h = fnv_word(h, mix->components);
    h = fnv_word(h, mix->latent);
    for (uint32_t k = 0; k < components; k++) {
        values += mix->latent;
        h = fnv_byte(fnv_byte(h, mix->cum[k]), (uint32_t)mix->cum[k] >> 8);
    }
    for (uint32_t i = 0; i < values; i++) {
        h = fnv_byte(h, (uint8_t)mix->centre[i]);
    }
    for (uint32_t i = 0; i < values; i++) {
        h = fnv_byte(h, mix->spread[i]);
    }
    return h;
}

bitmcu_status bitmcu_check_mixture(const bitmcu_model *m, const bitmcu_mixture *mix,
                                   size_t n_entries, uint32_t flags) {
    if (!m || !mix) {
        return BITMCU_ERR_ARG;
    }
    if (m->kind != BITMCU_KIND_DECODER || mix->n_classes != m->n_classes ||
        mix->latent != m->n_input || mix->components == 0u || mix->components > 255u ||
        !mix->cum || !mix->centre || !mix->spread) {
        return BITMCU_ERR_MODEL;
    }
    if (mixture_entries(mix) != n_entries) { /* the counts are not the compiled arrays' */
        return BITMCU_ERR_MODEL;
    }
    if ((flags & BITMCU_CHECK_SUMS) && bitmcu_mixture_sum(mix) != mix->sum) {
        return BITMCU_ERR_CHECKSUM;
    }
    return BITMCU_OK;
}

const char *bitmcu_status_name(uint32_t status) {
    static const char *const names[BITMCU_N_STATUS] = {
        "BITMCU_OK",        "BITMCU_ERR_MAGIC", "BITMCU_ERR_VERSION", "BITMCU_ERR_ARENA",
        "BITMCU_ERR_LAYER", "BITMCU_ERR_ARG",   "BITMCU_ERR_MODEL",   "BITMCU_ERR_CHECKSUM"};
    return status < BITMCU_N_STATUS ? names[status] : "BITMCU_ERR_UNKNOWN";
}
