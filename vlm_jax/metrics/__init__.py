"""Metric math as pure functions (NumPy), shared by the evaluation binaries."""
