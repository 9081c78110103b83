"""Unit tests: the domain and the planning, with no network."""
