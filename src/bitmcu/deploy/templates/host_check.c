#include "bitmcu.h"
#include "model.h"

/* bitmcu_check of the model (with its checksums); the sums stored in and computed from it. */
int bitmcu_host_check(uint32_t *sums);
int bitmcu_host_check(uint32_t *sums) {
    const bitmcu_status st = bitmcu_check(&bitmcu_model_data, BITMCU_MODEL_TABLE_ENTRIES, 0u);
    sums[0] = bitmcu_model_data.table_sum;
    sums[1] = bitmcu_model_data.weight_sum;
    sums[2] = sums[3] = 0u;
    if (st != BITMCU_OK) {
        return (int)st;
    }
    bitmcu_sums(&bitmcu_model_data, &sums[2], &sums[3]);
    return (int)bitmcu_check(&bitmcu_model_data, BITMCU_MODEL_TABLE_ENTRIES, BITMCU_CHECK_SUMS);
}
