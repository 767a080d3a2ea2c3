"""A literate, executable book and Python library for 3D head reconstruction, all methods on one tested core."""

__version__ = "0.1.0"
