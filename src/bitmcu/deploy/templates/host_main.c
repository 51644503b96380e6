#include <stdio.h>
#include <stdlib.h>

#include "bitmcu.h"
#include "model.h"

int bitmcu_host_run_batch(const uint8_t *images, int32_t n, int32_t *logits);

/* usage: prog IMAGES.bin N LOGITS.bin */
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int32_t n = (int32_t)atoi(argv[2]);
    size_t npx = (size_t)n * BITMCU_MODEL_N_INPUT, nlg = (size_t)n * BITMCU_MODEL_N_CLASSES;
    uint8_t *images = malloc(npx ? npx : 1);
    int32_t *logits = malloc((nlg ? nlg : 1) * sizeof(int32_t));
    FILE *f = fopen(argv[1], "rb");
    if (!images || !logits || !f || fread(images, 1, npx, f) != npx) return 3;
    fclose(f);
    int rc = bitmcu_host_run_batch(images, n, logits);
    if (rc != 0) return 4;
    f = fopen(argv[3], "wb");
    if (!f || fwrite(logits, sizeof(int32_t), nlg, f) != nlg) return 5;
    fclose(f);
    free(images);
    free(logits);
    return 0;
}
