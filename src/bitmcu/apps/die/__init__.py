"""The electronic die: its firmware (die.c), the emulated peripherals and display, rolls."""
