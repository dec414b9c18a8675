"""tank."""
