#include "bitmcu.h"
#include "model.h"

/* bitmcu_check of the model (with its checksums) and of its mixture prior where it has one;
 * sums: the table's and weights' sums stored in and computed from the table, then the
 * mixture's stored and computed (zeros where there is none, or where the fields do not check
 * and so are not summed). */
int bitmcu_host_check(uint32_t *sums);
int bitmcu_host_check(uint32_t *sums) {
    bitmcu_status st = bitmcu_check(&bitmcu_model_data, BITMCU_MODEL_TABLE_ENTRIES, 0u);
    sums[0] = bitmcu_model_data.table_sum;
    sums[1] = bitmcu_model_data.weight_sum;
    sums[2] = sums[3] = sums[4] = sums[5] = 0u;
    if (st != BITMCU_OK) {
        return (int)st;
    }
    bitmcu_sums(&bitmcu_model_data, &sums[2], &sums[3]);
#ifdef BITMCU_MODEL_MIXTURE
    sums[4] = BITMCU_MODEL_MIXTURE->sum;
    st = bitmcu_check_mixture(&bitmcu_model_data, BITMCU_MODEL_MIXTURE,
                              BITMCU_MODEL_MIXTURE_ENTRIES, 0u);
    if (st != BITMCU_OK) {
        return (int)st;
    }
    sums[5] = bitmcu_mixture_sum(BITMCU_MODEL_MIXTURE);
#endif
    st = bitmcu_check(&bitmcu_model_data, BITMCU_MODEL_TABLE_ENTRIES, BITMCU_CHECK_SUMS);
#ifdef BITMCU_MODEL_MIXTURE
    if (st == BITMCU_OK) {
        st = bitmcu_check_mixture(&bitmcu_model_data, BITMCU_MODEL_MIXTURE,
                                  BITMCU_MODEL_MIXTURE_ENTRIES, BITMCU_CHECK_SUMS);
    }
#endif
    return (int)st;
}
