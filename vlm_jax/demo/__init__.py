"""The demos (`vlm-jax demo`): a system's every stage on rendered videos, and a report."""
