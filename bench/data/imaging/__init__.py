"""Images: reading NIfTI and DICOM (PET as SUV), resampling onto one grid, ROI masks."""
