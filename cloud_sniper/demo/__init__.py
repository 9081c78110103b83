"""Bundled demo findings about the seeded estate."""
