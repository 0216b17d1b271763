"""rnnc's version and where its sources are (for cache keys), importable without importing the package."""
from pathlib import Path

__version__ = "0.1.0"
ROOT = Path(__file__).resolve().parent
