"""Data: sources, synthetic formulas, rendering, augmentation, datasets, EDA."""
