"""What the labels mean: the codes of UTKFace's file names, the splits, the ages a distribution spans.

A leaf module (NumPy only): ingestion, the tasks, the losses and the reports all read these,
so none of them has to import another for a constant.
"""

import numpy as np

RACES = ("White", "Black", "Asian", "Indian", "Others")  # race codes 0-4
GENDERS = ("male", "female")  # gender codes 0 and 1
SPLITS = ("train", "val", "test")

# Ages the "distribution" loss spreads its probabilities over: one bin per year.
AGE_BINS = np.arange(0, 121, dtype="float32")
