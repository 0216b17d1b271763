"""Reading and writing models: portable ``.rnnc`` files (:func:`save`, :func:`load`)."""
from rnnc.io.model_file import LoadedModel, ModelFileError, load, save

__all__ = ["LoadedModel", "ModelFileError", "load", "save"]
