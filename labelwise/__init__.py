"""labelwise: the command line and the HTTP client. Models live in training/serving/model_repository."""

__all__ = ["__version__"]
__version__ = "0.1.0"
