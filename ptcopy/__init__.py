"""ptcopy: point-in-time copies (data imaging) for Linux."""

__version__ = "0.1.0"
