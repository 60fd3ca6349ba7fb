"""Training CLI (Optax): data pipeline, train loop, checkpoints, pack export. See issue "Trainer CLI"."""
