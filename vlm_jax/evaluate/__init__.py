"""Evaluation binaries: `vlm-jax eval <task>` or `python -m vlm_jax.evaluate.<task>`."""
