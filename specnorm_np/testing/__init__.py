"""Testing helpers that ship with the library (the strict CuPy-like backend)."""
