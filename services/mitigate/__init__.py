"""The mitigate service."""
