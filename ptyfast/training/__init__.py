"""Supervised pre-training (torch): on-the-fly simulated data, the paper's recipe, DDP via torchrun."""
