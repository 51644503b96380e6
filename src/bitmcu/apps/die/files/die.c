/* die.c - bitmcu's electronic die for the CH32V003: at start-up and on every debounced press of
 * the button it rolls a fair die (rejection sampling on the PRNG), samples a latent, generates
 * the face with the decoder and streams it, band by band, to an SSD1306 128x64 OLED over I2C1:
 * each pixel of the 32x32 (or 16x16) image becomes 2x2 (4x4) display pixels, a 64x64 picture
 * in the middle of the screen, dithered to 1 bit (the thresholds of a 4x4 matrix: display.py),
 * one 8-row display page at a time (a 64-byte buffer, never a frame buffer), each page sent by
 * DMA while the next one is generated. The seed mixes
 * ADC noise with the SysTick count at the press. A roll starts at the press's first edge; the
 * press counts if the button is still down DIE_DEBOUNCE_MS later, checked before the first
 * page is drawn.
 *
 * Between rolls the chip sleeps in standby (every clock stopped, SysTick too), woken by the
 * button's falling edge as an EXTI event (WFI taken as WFE: no interrupt handler). The display
 * stays on DIE_AWU_WAKES auto-wakeup periods after the button is let go (the LSI's counter,
 * woken to count them), then sleeps itself (display off, charge pump off) until the next roll.
 * With DIE_POWER, a pin also switches the display's supply (a P-MOSFET, on while the pin is
 * low): off one short auto-wakeup period (the datasheet's tOFF) after the display sleeps, on
 * again at the next press's edge; the display is set up from reset when the press counts (the
 * panel lights 100 ms after its AFh, as it does from sleep), the sides of the picture cleared.
 *
 * Each roll's face (or line), its cycles and the engine's status are printed on USART1 (TX on
 * PD5, 115200 8N1; board.c), and the LED pin (where one is given) toggles.
 *
 * Marker events (the emulator's view; a plain RAM word on the chip): 1 = roll start (arg: roll
 * index), 2 = layer start (the engine's trace), 5/6 = a display transfer starts/ends, 3 = roll
 * end (arg: the face drawn, 1..6; 0x800000 | the bitmcu_status when the model reported an error), 7 = the test
 * pattern (button held at power-up) is on the display, 8 = the roll was dropped (arg: its index;
 * the button was up again DIE_DEBOUNCE_MS after the edge that started it: no press).
 *
 * The text die (DIE_TEXT, a character model): each press generates one line, token by token
 * from the same PRNG state, and draws it centred with the glyphs of die_font.h (twice their size
 * where the line fits); roll end's arg is then the line's length in characters. */
#include "bitmcu.h"
#include "board.h"
#include "ch32v003_regs.h"
#include "die_config.h"
#include "model.h"
#if DIE_TEXT
#include "die_font.h"
#endif

volatile uint32_t bitmcu_marker;
static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
static uint8_t page[64];        /* the display page being filled: 64 columns x 8 rows */
static uint8_t i2c_failed;      /* the display did not acknowledge: keep rolling without it */

/* the memory clobber: every store before a marker (die_state's) is done when the emulator sees it */
#define MARK(event, arg)                                                                         \
    do {                                                                                         \
        __asm__ volatile("" ::: "memory");                                                       \
        bitmcu_marker = ((uint32_t)(event) << 24) | (uint32_t)(arg);                             \
    } while (0)
#define TICKS_PER_MS (DIE_CLOCK_HZ / 1000u)
#define LEFT 32u /* first display column of the 64x64 picture */

/* ------------------------------------------------------------------ clock, timer, pins */

static uint32_t now(void) { return STK_CNTL; }

static void pin_mode(uint32_t port, uint32_t pin, uint32_t mode) {
    GPIO_CFGLR(port) = (GPIO_CFGLR(port) & ~(15u << (4u * pin))) | (mode << (4u * pin));
}

/* ------------------------------------------------------------------ entropy */

static void adc_init(void) {
    RCC_APB2PCENR |= RCC_ADC1EN | RCC_IOPDEN;
    RCC_CFGR0 &= ~RCC_ADCPRE_MASK; /* ADC clock: HCLK / 2 */
    pin_mode(DIE_ADC_PORT, DIE_ADC_PIN, GPIO_IN_ANALOG);
    ADC1_RSQR1 = 0;                 /* one conversion */
    ADC1_RSQR3 = DIE_ADC_CHANNEL;
    ADC1_SAMPTR2 = 0;               /* the shortest sample time: the most noise */
    ADC1_CTLR2 = ADC_ADON | ADC_EXTSEL_SWSTART | ADC_EXTTRIG;
    ADC1_CTLR2 |= ADC_RSTCAL;
    while (ADC1_CTLR2 & ADC_RSTCAL) {
    }
    ADC1_CTLR2 |= ADC_CAL;
    while (ADC1_CTLR2 & ADC_CAL) {
    }
}

static uint32_t adc_read(void) {
    ADC1_CTLR2 |= ADC_SWSTART;
    while (!(ADC1_STATR & ADC_EOC)) {
    }
    return ADC1_RDATAR & 0x3FFu;
}

/* 32 conversions of the floating pin: their two low bits, folded into one word */
static uint32_t adc_noise(void) {
    uint32_t w = 0;
    for (uint32_t i = 0; i < 32u; i++) {
        w = (w << 2 | w >> 30) ^ adc_read();
    }
    return w;
}

/* ------------------------------------------------------------------ I2C1 and the SSD1306 */

static int i2c_wait(uint32_t flags) {
    uint32_t s;
    while (!((s = I2C1_STAR1) & flags)) {
        if (s & I2C_AF) {
            I2C1_CTLR1 |= I2C_STOP;
            i2c_failed = 1;
            return 0;
        }
    }
    return 1;
}

static void i2c_init(void) {
    RCC_APB2PCENR |= RCC_IOPCEN | RCC_AFIOEN;
    RCC_APB1PCENR |= RCC_I2C1EN;
    pin_mode(2, 1, GPIO_AF_OD_50MHZ); /* PC1 = SDA */
    pin_mode(2, 2, GPIO_AF_OD_50MHZ); /* PC2 = SCL */
    I2C1_CTLR2 = DIE_CLOCK_HZ / 1000000u; /* peripheral clock in MHz */
    RCC_AHBPCENR |= RCC_DMA1EN;
    DMA1_PADDR6 = (uint32_t)&I2C1_DATAR;
    I2C1_CKCFGR = I2C_FS | (DIE_CLOCK_HZ / (3u * DIE_I2C_HZ));
    I2C1_CTLR1 = I2C_PE;
}

#if !DIE_TEXT
static uint8_t dma_busy; /* a page is going to the display by DMA */

/* The page that DMA sends, finished: every byte out (TCIF6, then BTF), then STOP. */
static void page_finish(void) {
    if (!dma_busy) {
        return;
    }
    MARK(5, 8);
    while (!(DMA1_INTFR & DMA_TCIF6)) {
    }
    if (i2c_wait(I2C_BTF)) {
        I2C1_CTLR1 |= I2C_STOP;
    }
    DMA1_CFGR6 = 0;
    DMA1_INTFCR = DMA_TCIF6;
    I2C1_CTLR2 &= ~I2C_DMAEN;
    dma_busy = 0;
    MARK(6, 8);
}
#else
#define page_finish() ((void)0)
#endif

/* START, the display's address and a control byte: 0 where the display did not answer. */
static int oled_begin(uint8_t control) {
    if (i2c_failed) {
        return 0;
    }
    page_finish();
    while (I2C1_STAR2 & I2C_BUSY) {
    }
    I2C1_CTLR1 |= I2C_START;
    if (!i2c_wait(I2C_SB)) {
        return 0;
    }
    I2C1_DATAR = DIE_OLED_ADDR << 1;
    if (!i2c_wait(I2C_ADDR)) {
        return 0;
    }
    (void)I2C1_STAR2; /* reading STAR1 then STAR2 clears ADDR */
    I2C1_DATAR = control;
    return 1;
}

/* One I2C write transaction to the display: control byte, then n bytes. */
static void oled_send(uint8_t control, const uint8_t *bytes, uint32_t n, int repeat) {
    if (!oled_begin(control)) {
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!i2c_wait(I2C_TXE)) {
            return;
        }
        I2C1_DATAR = repeat ? bytes[0] : bytes[i];
    }
    if (!i2c_wait(I2C_BTF)) {
        return;
    }
    I2C1_CTLR1 |= I2C_STOP;
}

static void oled_commands(const uint8_t *cmds, uint32_t n) { oled_send(0x00, cmds, n, 0); }

static const uint8_t oled_init_cmds[] = {
    0xAE,       /* display off */
    0xD5, 0x80, /* clock divide ratio and oscillator frequency */
    0xA8, 0x3F, /* multiplex ratio: 64 rows */
    0xD3, 0x00, /* display offset */
    0x40,       /* start line 0 */
    0x8D, 0x14, /* charge pump on */
    0x20, 0x00, /* horizontal addressing */
    0xA1,       /* segment remap: column 127 -> SEG0 (the usual module orientation) */
    0xC8,       /* COM scan from COM63: row 0 at the top */
    0xDA, 0x12, /* COM pins: alternative configuration */
    0x81, 0xCF, /* contrast */
    0xD9, 0xF1, /* pre-charge period */
    0xDB, 0x40, /* VCOMH deselect level */
    0xA4,       /* show the display RAM */
    0xA6,       /* not inverted */
    0x2E,       /* no scrolling */
    0x21, 0, 127, 0x22, 0, 7, /* the whole screen */
};
static const uint8_t oled_on[] = {0xAF};
static const uint8_t oled_off[] = {0xAE, 0x8D, 0x10}; /* display off, then its charge pump */
static const uint8_t oled_wake[] = {0x8D, 0x14, 0xAF}; /* charge pump on, display on */
static uint32_t press_at;   /* when the roll's press began (SysTick) */
static uint8_t press_state; /* 0: not checked yet, 1: held (or the start-up roll), 2: no press */
/* the display: its supply switched off (DIE_POWER), on but not set up, set up and asleep, on */
enum { OLED_UNPOWERED, OLED_RESET, OLED_ASLEEP, OLED_ON };
static uint8_t oled_state;
#if !DIE_TEXT
static const uint8_t oled_window[] = {0x21, LEFT, LEFT + 63u, 0x22, 0, 7};
#endif

static void oled_clear(void) {
    static const uint8_t zero = 0;
    oled_commands(oled_init_cmds + sizeof oled_init_cmds - 6u, 6u); /* the whole screen */
    oled_send(0x40, &zero, 1024, 1);
}

static void oled_init(void) {
    oled_commands(oled_init_cmds, sizeof oled_init_cmds);
    oled_clear();
    oled_commands(oled_on, sizeof oled_on);
    oled_state = OLED_ON;
}

#if DIE_POWER
/* The display's supply through the P-MOSFET: the pin low switches it on; high (or an input, at
 * reset: a pull-up holds the gate) off. Off, I2C1 lets go of SDA and SCL (analog inputs): the
 * module's pull-ups have no supply, and the bus must not feed the display. Switched on, the
 * display takes commands DIE_POWER_UP_MS later (power_settle). */
static void display_power(int on) {
    if (on) {
        GPIO_BSHR(DIE_POWER_PORT) = 1u << (16u + DIE_POWER_PIN);
        pin_mode(DIE_POWER_PORT, DIE_POWER_PIN, GPIO_OUT_PP_10MHZ);
        oled_state = OLED_RESET;
    } else {
        I2C1_CTLR1 = 0;
        pin_mode(2, 1, GPIO_IN_ANALOG);
        pin_mode(2, 2, GPIO_IN_ANALOG);
        GPIO_BSHR(DIE_POWER_PORT) = 1u << DIE_POWER_PIN;
        oled_state = OLED_UNPOWERED;
    }
}

/* Wait until DIE_POWER_UP_MS have passed since `at` (the switch went on then or just after). */
static void power_settle(uint32_t at) {
    while (now() - at < DIE_POWER_UP_MS * TICKS_PER_MS) {
    }
}
#endif

/* The display on again before a roll's picture (the panel lights about 100 ms after, while
 * the picture is drawn). Switched on at the press (DIE_POWER): set up from reset, turned on at
 * once, then the sides of the picture cleared (the panel is still dark) and its window set. */
static void display_wake(void) {
#if DIE_POWER
    if (oled_state == OLED_RESET) {
        power_settle(press_at);
        i2c_init();
        oled_commands(oled_init_cmds, sizeof oled_init_cmds);
        oled_commands(oled_on, sizeof oled_on);
#if DIE_TEXT
        oled_state = OLED_ON; /* each line fills the whole screen */
#else
        static const uint8_t zero = 0;
        static const uint8_t sides[] = {0x21, 0, LEFT - 1u, 0x22, 0, 7, /* the left side */
                                        0x21, LEFT + 64u, 127, 0x22, 0, 7};
        for (uint32_t k = 0; k < 2u; k++) {
            oled_commands(sides + 6u * k, 6u);
            oled_send(0x40, &zero, LEFT * 8u, 1);
        }
        oled_commands(oled_window, sizeof oled_window);
        oled_state = OLED_ON;
#endif
        return;
    }
#endif
    if (oled_state != OLED_ON) {
        oled_commands(oled_wake, sizeof oled_wake);
        oled_state = OLED_ON;
    }
}

/* ------------------------------------------------------------------ sleep and the button */

static void sleep_init(void) {
    RCC_APB1PCENR |= RCC_PWREN;
    AFIO_EXTICR = (AFIO_EXTICR & ~(3u << (2u * DIE_BUTTON_PIN))) |
                  (DIE_BUTTON_EXTI_PORT << (2u * DIE_BUTTON_PIN));
    EXTI_EVENR |= (1u << DIE_BUTTON_PIN) | EXTI_AWU; /* events, not interrupts */
    EXTI_FTENR |= (1u << DIE_BUTTON_PIN) | EXTI_AWU; /* the button pulls its pin down */
    PWR_AWUPSC = DIE_AWU_PSC;
    PWR_AWUWR = DIE_AWU_WINDOW;
    PFIC_SCTLR |= PFIC_SLEEPDEEP | PFIC_WFITOWFE;
}

static int button_down(void) { return !(GPIO_INDR(DIE_BUTTON_PORT) & (1u << DIE_BUTTON_PIN)); }

/* Standby until an event: the button going down or, with awu, the auto-wakeup. An event from
 * before (a bounce of the last press) is cleared first: SETEVENT makes the first wait end at
 * once. The chip wakes on the HSI (24 MHz): the clock is set up again. */
static void standby(uint32_t awu) {
    board_flush(); /* standby stops USART1's clock */
    if (awu) { /* the auto-wakeup's clock: the LSI, 128 kHz (off otherwise: 1.5 uA less) */
        RCC_RSTSCKR |= RCC_LSION;
        while (!(RCC_RSTSCKR & RCC_LSIRDY)) {
        }
    } else {
        RCC_RSTSCKR &= ~RCC_LSION;
    }
    PWR_AWUCSR = awu ? PWR_AWUEN : 0u;
    PWR_CTLR |= PWR_PDDS;
    PFIC_SCTLR |= PFIC_SETEVENT;
    __asm__ volatile("wfi");
    if (!button_down()) { /* not pressed since the check before the call */
        __asm__ volatile("wfi");
    }
    board_clock();
}

/* Wait for a press: the button up (for DIE_DEBOUNCE_MS without a break, unless it is up on
 * entry: the last press ended during the roll), then standby until it goes down. The display
 * sleeps once DIE_AWU_WAKES auto-wakeups have passed in standby. Returns the time the press
 * began (SysTick, which stands still in standby): the roll starts at once, and press_held()
 * checks the press before the first page is drawn. */
static uint32_t wait_press(void) {
    int down = button_down(), armed = !down;
    uint32_t since = now();
    /* auto-wakeups until the display sleeps (and its supply goes off DIE_OFF_WAKES later) */
    uint32_t awu_left = oled_state == OLED_ON ? DIE_AWU_WAKES + DIE_OFF_WAKES
                        : oled_state != OLED_UNPOWERED ? DIE_OFF_WAKES : 0u;
    PWR_AWUCSR = 0; /* the auto-wakeup counts from the next standby */
#if DIE_POWER
    PWR_AWUWR = awu_left > DIE_OFF_WAKES ? DIE_AWU_WINDOW : DIE_OFF_WINDOW;
#endif
    for (;;) {
        const int d = button_down();
        const uint32_t t = now();
        if (d != down) {
            down = d;
            since = t;
            if (down && armed) {
                return t;
            }
        } else if (!down && t - since >= DIE_DEBOUNCE_MS * TICKS_PER_MS) {
            /* up long enough: sleep until the button goes down */
            for (;;) {
                standby(awu_left != 0u);
                if (button_down()) {
                    PWR_AWUCSR = 0;
                    return now();
                }
                if (awu_left && --awu_left == DIE_OFF_WAKES && oled_state == OLED_ON) {
                    oled_commands(oled_off, sizeof oled_off); /* the display's time is up */
                    oled_state = OLED_ASLEEP;
#if DIE_POWER
                    PWR_AWUCSR = 0; /* then tOFF: one short period */
                    PWR_AWUWR = DIE_OFF_WINDOW;
#endif
                }
#if DIE_POWER
                else if (awu_left == 0u && oled_state != OLED_UNPOWERED) {
                    display_power(0);
                }
#endif
            }
        }
    }
}

/* A roll starts at its press's first edge; the press counts if the button is still down
 * DIE_DEBOUNCE_MS after it, checked (waiting where it is sooner) before the first page goes to
 * the display while the picture is generated: a bounce or a shorter press draws nothing. */

static int press_held(void) {
    if (!press_state) {
        while (now() - press_at < DIE_DEBOUNCE_MS * TICKS_PER_MS) {
        }
        press_state = button_down() ? 1u : 2u;
        if (press_state == 1u) {
            display_wake();
        }
    }
    return press_state == 1u;
}

#if !DIE_TEXT
/* ------------------------------------------------------------------ picture: scale and dither */

/* A display pixel is lit where its picture pixel is above its threshold: a 4x4 matrix over the
 * display's coordinates (display.py's thresholds: the Bayer matrix, with or without the levels
 * curve folded in, or 127 everywhere). */
static const uint8_t dither_thresholds[4][4] = DIE_DITHER_THRESHOLDS;
#define LIT(p, x, y) ((p) > (uint32_t)dither_thresholds[(y) & 3u][(x) & 3u])

/* The model's rows, as they are generated: each row fills DIE_SCALE display rows of the page
 * being built, each pixel DIE_SCALE x DIE_SCALE display pixels; a full page goes to the display
 * at once. */
static void emit(void *ctx, const uint8_t *rows, uint16_t y0, uint16_t n_rows, uint16_t width) {
    (void)ctx;
    for (uint32_t r = 0; r < n_rows; r++) {
        const uint8_t *px = rows + r * width;
        const uint32_t y = DIE_SCALE * (y0 + r); /* first display row of this image row */
        if ((y & 7u) == 0u) { /* a new page: the last one sent, its buffer cleared */
            page_finish();
            for (uint32_t i = 0; i < sizeof page; i++) {
                page[i] = 0;
            }
        }
        for (uint32_t x = 0; x < width; x++) {
            const uint32_t p = px[x];
            for (uint32_t dy = 0; dy < DIE_SCALE; dy++) {
                const uint8_t bit = (uint8_t)(1u << ((y + dy) & 7u));
                for (uint32_t dx = 0; dx < DIE_SCALE; dx++) {
                    if (LIT(p, DIE_SCALE * x + dx, y + dy)) {
                        page[DIE_SCALE * x + dx] |= bit;
                    }
                }
            }
        }
        if (((y + DIE_SCALE - 1u) & 7u) == 7u && press_held()) { /* the page is complete */
            MARK(5, y >> 3); /* to the display by DMA while the next page is generated */
            if (oled_begin(0x40)) {
                DMA1_MADDR6 = (uint32_t)page;
                DMA1_CNTR6 = sizeof page;
                I2C1_CTLR2 |= I2C_DMAEN;
                DMA1_CFGR6 = DMA_MINC | DMA_DIR_FROM_MEMORY | DMA_EN;
                dma_busy = 1;
            }
            MARK(6, y >> 3);
        }
    }
}

/* ------------------------------------------------------------------ the die */

/* A face 0..5, uniform: three bits of the PRNG, drawn again when they are 6 or 7. */
static uint32_t roll_face(uint32_t *state) {
    for (;;) {
        const uint32_t v = bitmcu_xorshift32(state) >> 29;
        if (v < 6u) {
            return v;
        }
    }
}

/* The PRNG state each roll starts from: the last one stirred with the new noise (a global, so
 * that the emulator can check the roll against the numpy reference). */
uint32_t die_state = 0x2545F491u;

static void roll(uint32_t index, uint32_t entropy) {
    int8_t z[BITMCU_MODEL_LATENT];
    die_state = bitmcu_seed_state(die_state ^ entropy);
    MARK(1, index);
    uint32_t state = die_state;
    const uint32_t face = roll_face(&state);
    BITMCU_MODEL_SAMPLE(&state, z, (uint16_t)face);
    if (oled_state != OLED_RESET) { /* else display_wake() sets it with the display up */
        oled_commands(oled_window, sizeof oled_window);
    }
    for (uint32_t i = 0; i < sizeof page; i++) {
        page[i] = 0;
    }
    const bitmcu_status st = bitmcu_generate(&bitmcu_model_data, z, (uint16_t)face, arena,
                                             BITMCU_MODEL_ARENA_WORDS, emit, 0);
    page_finish(); /* the last page */
    if (!press_held()) { /* no press after all: nothing was drawn */
        MARK(8, index);
        return;
    }
    MARK(3, st == BITMCU_OK ? face + 1u : 0x800000u | (uint32_t)st);
    board_led_toggle();
    board_print("roll %: face %, % cycles, status %\r\n", index, face + 1u, now() - press_at,
                (uint32_t)st, 0); /* cycles awake since the press (or start-up) */
}

#else
/* ------------------------------------------------------------------ the text die */

/* The bits of display page p (rows 8p..8p+7) of a glyph column (bit k: font row k) drawn from
 * display row y0 on, each font row `s` display rows (s: 1 or 2, the shift sh = s - 1). */
static uint8_t column_bits(uint32_t col, uint32_t p, uint32_t y0, uint32_t sh) {
    uint8_t b = 0;
    for (uint32_t r = 0; r < 8u; r++) {
        const uint32_t y = 8u * p + r;
        if (y >= y0) {
            const uint32_t fy = (y - y0) >> sh;
            if (fy < DIE_FONT_ROWS && ((col >> fy) & 1u)) {
                b |= (uint8_t)(1u << r);
            }
        }
    }
    return b;
}

/* The line centred on the whole screen, page by page, 64 columns at a time. */
static void draw_line(const uint8_t *tokens, uint32_t n) {
    const uint32_t sh = n * DIE_FONT_ADVANCE * 2u <= 128u && DIE_FONT_ROWS * 2u <= 64u;
    const uint32_t width = (n * DIE_FONT_ADVANCE) << sh;
    const uint32_t x0 = (128u - width) >> 1, y0 = (64u - (DIE_FONT_ROWS << sh)) >> 1;
    oled_commands(oled_init_cmds + sizeof oled_init_cmds - 6u, 6u); /* the whole screen */
    for (uint32_t p = 0; p < 8u; p++) {
        for (uint32_t half = 0; half < 2u; half++) {
            for (uint32_t i = 0; i < sizeof page; i++) {
                page[i] = 0;
            }
            uint32_t x = x0;
            for (uint32_t k = 0; k < n; k++) {
                const uint16_t *g = die_font[tokens[k]];
                for (uint32_t fx = 0; fx < DIE_FONT_ADVANCE; fx++) {
                    for (uint32_t sx = 0; sx <= sh; sx++, x++) {
                        if (x >= 64u * half && x < 64u * half + 64u) {
                            page[x - 64u * half] = column_bits(g[fx], p, y0, sh);
                        }
                    }
                }
            }
            MARK(5, p);
            oled_send(0x40, page, sizeof page, 0);
            MARK(6, p);
        }
    }
}

uint32_t die_state = 0x2545F491u; /* as the picture die's (the emulator reads it) */

static void roll(uint32_t index, uint32_t entropy) {
    static const char *const chars[BITMCU_MODEL_N_CLASSES] = BITMCU_MODEL_TOKENS;
    uint8_t line[BITMCU_MODEL_MAX_CHARS];
    uint16_t n = 0;
    die_state = bitmcu_seed_state(die_state ^ entropy);
    MARK(1, index);
    uint32_t state = die_state;
    const bitmcu_status st = bitmcu_generate_text(&bitmcu_model_data, &state, line,
                                                  BITMCU_MODEL_MAX_CHARS, &n, arena,
                                                  BITMCU_MODEL_ARENA_WORDS);
    if (!press_held()) { /* no press after all: nothing is drawn */
        MARK(8, index);
        return;
    }
    if (st == BITMCU_OK) {
        draw_line(line, n);
    }
    MARK(3, st == BITMCU_OK ? n : 0x800000u | (uint32_t)st);
    const uint32_t cycles = now() - press_at; /* awake since the press (or start-up) */
    board_led_toggle();
    board_print("press %: ", index, 0, 0, 0, 0);
    for (uint32_t k = 0; k < n; k++) {
        board_puts(chars[line[k]]);
    }
    board_print(", % cycles, status %\r\n", cycles, (uint32_t)st, 0, 0, 0);
}
#endif

/* The wiring check: with the button held at power-up, an 8x8 checkerboard over the whole
 * screen until it is released. */
static void test_pattern(void) {
    oled_commands(oled_init_cmds + sizeof oled_init_cmds - 6u, 6u); /* the whole screen */
    for (uint32_t p = 0; p < 8u; p++) {
        for (uint32_t half = 0; half < 2u; half++) { /* 64 columns at a time, in page[] */
            for (uint32_t c = 0; c < 64u; c++) {
                page[c] = ((((64u * half + c) >> 3) ^ p) & 1u) ? 0xFFu : 0x00u;
            }
            oled_send(0x40, page, sizeof page, 0);
        }
    }
    MARK(7, 0);
    while (button_down()) {
    }
    oled_clear();
}

int main(void) {
    board_init(); /* 48 MHz, SysTick, USART1 on PD5, the LED */
    RCC_APB2PCENR |= RCC_IOPAEN | RCC_IOPCEN | RCC_IOPDEN;
    pin_mode(DIE_BUTTON_PORT, DIE_BUTTON_PIN, GPIO_IN_PULL);
    GPIO_BSHR(DIE_BUTTON_PORT) = 1u << DIE_BUTTON_PIN; /* pull-up: the button pulls to ground */
#if DIE_POWER
    display_power(1);
    power_settle(now());
#endif
    adc_init();
    i2c_init();
    oled_init();
    sleep_init();
    if (button_down()) {
        test_pattern();
    }
    uint32_t rolls = 0;
    press_state = 1; /* the start-up roll: no press to check */
    press_at = now();
    roll(rolls++, adc_noise() ^ press_at);
    for (;;) {
        press_at = wait_press();
        press_state = 0;
#if DIE_POWER
        if (oled_state == OLED_UNPOWERED) { /* it settles while the picture is generated */
            display_power(1);
        }
#endif
        roll(rolls++, adc_noise() ^ press_at);
    }
}
