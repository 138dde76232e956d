"""Using trained models: loading a run, masked prediction, zero-shot tasks, generation."""
