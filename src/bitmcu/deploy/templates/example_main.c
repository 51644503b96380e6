/* main.c - example: classify the embedded test images with the bitmcu engine.
 * Build on a PC:  cc -std=c99 -O2 main.c bitmcu.c -o example && ./example
 * Exit status 0 when every prediction equals the numpy reference's.
 */
#include <stdio.h>

#include "bitmcu.h"
#include "model.h"
#include "test_images.h"

static int32_t arena[BITMCU_MODEL_ARENA_WORDS];

int main(void) {
    int agree = 0, correct = 0;
    for (int i = 0; i < BITMCU_N_TEST_IMAGES; i++) {
        int32_t logits[BITMCU_MODEL_N_CLASSES];
        uint16_t pred = 0;
        bitmcu_status st = bitmcu_run(&bitmcu_model_data, bitmcu_test_images[i], arena,
                                      BITMCU_MODEL_ARENA_WORDS, logits, &pred);
        if (st != BITMCU_OK) {
            printf("image %d: bitmcu_run failed with status %d\n", i, (int)st);
            return 2;
        }
        agree += pred == bitmcu_test_expected[i];
        correct += pred == bitmcu_test_labels[i];
        printf("image %d: predicted %u, label %u\n", i, (unsigned)pred,
               (unsigned)bitmcu_test_labels[i]);
    }
    printf("%d/%d correct, %d/%d equal to the reference\n", correct, BITMCU_N_TEST_IMAGES, agree,
           BITMCU_N_TEST_IMAGES);
    return agree == BITMCU_N_TEST_IMAGES ? 0 : 1;
}
