#include <stdio.h>
#include <stdlib.h>

#include "bitmcu.h"
#include "model.h"

int bitmcu_host_generate_batch(const uint32_t *seeds, const uint16_t *classes, int32_t n,
                               uint8_t *images, int8_t *latents);

/* usage: prog SEEDS.bin CLASSES.bin N IMAGES.bin LATENTS.bin */
int main(int argc, char **argv) {
    if (argc != 6) return 2;
    int32_t n = (int32_t)atoi(argv[3]);
    size_t npx = (size_t)n * BITMCU_MODEL_OUTPUT_SIDE * BITMCU_MODEL_OUTPUT_SIDE;
    size_t nz = (size_t)n * BITMCU_MODEL_LATENT;
    uint32_t *seeds = malloc((size_t)n * 4 + 4);
    uint16_t *classes = malloc((size_t)n * 2 + 2);
    uint8_t *images = malloc(npx + 1);
    int8_t *latents = malloc(nz + 1);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(seeds, 4, (size_t)n, f) != (size_t)n) return 3;
    fclose(f);
    f = fopen(argv[2], "rb");
    if (!f || fread(classes, 2, (size_t)n, f) != (size_t)n) return 3;
    fclose(f);
    if (bitmcu_host_generate_batch(seeds, classes, n, images, latents) != 0) return 4;
    f = fopen(argv[4], "wb");
    if (!f || fwrite(images, 1, npx, f) != npx) return 5;
    fclose(f);
    f = fopen(argv[5], "wb");
    if (!f || fwrite(latents, 1, nz, f) != nz) return 5;
    fclose(f);
    return 0;
}
