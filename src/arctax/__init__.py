"""arctax: train and fairly compare ARC transformer models (Trial 69 champion vs ablations)."""

__version__ = "0.1.0"
