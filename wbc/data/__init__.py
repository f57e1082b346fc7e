"""Image sources, the deterministic preprocessing pipeline, caching and the LightningDataModule."""
