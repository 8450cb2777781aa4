"""fer: facial expression recognition experiments on FER2013-style data."""

__version__ = "0.1.0"
