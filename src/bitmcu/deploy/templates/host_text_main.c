#include <stdio.h>
#include <stdlib.h>

#include "bitmcu.h"
#include "model.h"

int bitmcu_host_text_batch(const uint32_t *seeds, int32_t n, int32_t steps,
                           const int32_t *prefix, int32_t n_prefix, int32_t *tokens,
                           int32_t *logits);

/* usage: prog SEEDS.bin N STEPS TOKENS.bin LOGITS.bin */
int main(int argc, char **argv) {
    if (argc != 6) return 2;
    int32_t n = (int32_t)atoi(argv[2]), steps = (int32_t)atoi(argv[3]);
    size_t nt = (size_t)n * (size_t)steps, nl = nt * BITMCU_MODEL_N_CLASSES;
    uint32_t *seeds = malloc((size_t)n * 4 + 4);
    int32_t *tokens = calloc(nt + 1, 4);
    int32_t *logits = calloc(nl + 1, 4);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(seeds, 4, (size_t)n, f) != (size_t)n) return 3;
    fclose(f);
    if (bitmcu_host_text_batch(seeds, n, steps, NULL, 0, tokens, logits) != 0) return 4;
    f = fopen(argv[4], "wb");
    if (!f || fwrite(tokens, 4, nt, f) != nt) return 5;
    fclose(f);
    f = fopen(argv[5], "wb");
    if (!f || fwrite(logits, 4, nl, f) != nl) return 5;
    fclose(f);
    return 0;
}
