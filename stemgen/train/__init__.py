"""Training: the LR schedule, the LightningModule, metrics (Lightning is imported lazily)."""
