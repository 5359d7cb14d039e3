"""Valence/arousal heads trained from cached features: models, features, training, metrics, runs."""
