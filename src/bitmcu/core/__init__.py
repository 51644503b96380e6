"""What every layer shares: errors, output folders, the PRNG and latent sampler."""
