"""Stage 3, features: the content-addressed cache and pretrained weights (the extractors are plugins in ``feature_extractors/``)."""
