"""Evaluation logic shared by every system, flag-free: readers, `run(...)` and summaries.

`vlm-jax eval <task>` runs them: its flags and --help text are in
vlm_jax/commands/eval_<task>.py.
"""
