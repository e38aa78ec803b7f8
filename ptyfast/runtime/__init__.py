"""Inference runtime: preprocessing, backends, the streaming reconstruct pipeline."""
