"""Adversarial models (IF-GAN, DECGAN): networks, losses and their tasks of the training loop."""
