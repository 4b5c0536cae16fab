"""Stage 1, the cohort: datasets (registered or a manifest), their images and ROI masks, the synthetic generator."""
