"""VideoCLIP: dual encoder, overlapped pair sampling, retrieval-augmented epochs, trainer, inference."""
