"""FER2013-style data: `read_dataset` reads any supported layout into a `FaceSet`."""

from fer.data.errors import DataError, DataWarning
from fer.data.faceset import FaceSet
from fer.data.labels import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from fer.data.readers import read_dataset

__all__ = ["CLASS_NAMES", "IMAGE_SIZE", "NUM_CLASSES", "DataError", "DataWarning", "FaceSet", "read_dataset"]
