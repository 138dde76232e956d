"""VideoBERT: joint vocabulary, records pipeline, model, objectives, step, trainer, inference."""
