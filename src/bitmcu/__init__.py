"""bitmcu: train 1-8 bit neural networks and run them bit-exactly on the smallest microcontrollers."""

__version__ = "0.1.0"
