"""mtlkit-face: face-identity and expression tasks with leak-free face-data protocols."""

__version__ = "0.1.0"
