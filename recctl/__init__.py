"""recctl: personalized e-commerce recommendations from the command line."""

__version__ = "0.1.0"
