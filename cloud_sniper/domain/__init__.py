"""Domain code shared by every service: plain functions over pydantic models, no AWS calls."""
