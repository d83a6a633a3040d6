"""Training of the grounding network (PyTorch): data, losses, the loop, checkpoints."""
