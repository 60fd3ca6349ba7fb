"""Training CLI (Optax): data, GAN train loop, checkpoints, add-style, CycleGAN, eval, export."""
