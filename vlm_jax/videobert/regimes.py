"""The three pretraining regimes of an example (SPEC section 1), as stored in records."""

TEXT, VIDEO, VIDEO_TEXT = 0, 1, 2
REGIME_NAMES = ('text', 'video', 'video_text')
