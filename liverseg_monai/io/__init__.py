"""Reading and writing medical images: NIfTI, DICOM series, DICOM-SEG, slides."""
