"""Cloud Sniper: security operations for AWS."""

__version__ = "0.1.0"
