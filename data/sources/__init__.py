"""Readers of the datasets EmotionSet merges, one per native format."""
