"""Integration tests: the services against an account emulated by moto."""
