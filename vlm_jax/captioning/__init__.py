"""The captioner shared by the systems: a transformer encoder-decoder over segment features."""
