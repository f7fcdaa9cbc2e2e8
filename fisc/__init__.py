"""fisc: training and evaluation of image copy-detection descriptors (ISC 2021 / DISC21)."""

__version__ = "0.1.0"
