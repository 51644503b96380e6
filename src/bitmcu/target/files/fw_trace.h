/* fw_trace.h - included into every firmware translation unit: routes the engine's trace hook
 * to the marker word. */
#ifndef __ASSEMBLER__
#include <stdint.h>
extern volatile uint32_t bitmcu_marker;
#define BITMCU_TRACE(event, arg) (bitmcu_marker = ((uint32_t)(event) << 24) | (uint32_t)(arg))
#endif
