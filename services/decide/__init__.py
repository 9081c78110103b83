"""The decide service."""
