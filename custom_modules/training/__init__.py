"""Training: the shared Brain pieces, experiment flow, checkpoints, losses and run reports."""
