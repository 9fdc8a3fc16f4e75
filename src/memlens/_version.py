"""The package version, in a module of its own so that ``memlens.audit`` can record it without
importing the package face (which would import ``audit`` back)."""
__version__ = "0.1.0"
