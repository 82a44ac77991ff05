"""Training machinery: the loop, losses, mixed precision, checkpoints and progress reporting."""
