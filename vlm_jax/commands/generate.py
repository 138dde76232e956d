"""vlm-jax generate: VideoBERT text-to-video and future forecasting, as PNG strips.

  vlm-jax generate --workdir RUN --codebook codebook.npz --videos VIDEOS_DIR \\
      --output DIR --sentences recipe.txt [--num_tokens 4]
  vlm-jax generate --workdir RUN --codebook codebook.npz --videos VIDEOS_DIR \\
      --output DIR --tokens 3,17,42 [--rates 1,2,3,4,5]

With --sentences (one sentence per line; a recipe) it writes
DIR/text_to_video.png (a row per sentence: its most likely visual tokens) and
with --tokens DIR/forecast.png (a row per token and rate: the top-3 tokens that
many clips ahead), plus DIR/generation.json with the ids. Tokens are shown as
the middle frame of the training clip nearest their centroid, decoded from
VIDEOS_DIR (the videos the codebook was built from).
"""

from absl import flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'vlm-jax train workdir.')
_CODEBOOK = flags.DEFINE_string('codebook', None, 'Codebook .npz from build-codebook.')
_VIDEOS = flags.DEFINE_string('videos', None, 'Folder of the videos the codebook was built '
                              'from.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.')
_SENTENCES = flags.DEFINE_string('sentences', None, 'Text file, one sentence per line.')
_TOKENS = flags.DEFINE_list('tokens', [], 'Visual token ids to forecast from.')
_NUM_TOKENS = flags.DEFINE_integer('num_tokens', 4, 'Visual tokens per sentence.')
_RATES = flags.DEFINE_list('rates', ['1', '2', '3', '4', '5'], 'Forecast this many clips '
                           'ahead.')
_FPS = flags.DEFINE_float('fps', 20.0, 'Decoding rate of the clips (as for the features).')
_CLIP_FRAMES = flags.DEFINE_integer('clip_frames', 30, 'Frames per clip.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['workdir', 'codebook', 'videos', 'output']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need neither JAX nor TensorFlow.
  from vlm_jax.stages import generate  # pylint: disable=import-outside-toplevel
  output = _OUTPUT.value
  try:
    sentences = generate.read_sentences(_SENTENCES.value) if _SENTENCES.value else []
    generate.run(_WORKDIR.value, _CODEBOOK.value, _VIDEOS.value, output, sentences,
                 _TOKENS.value, _NUM_TOKENS.value, [int(r) for r in _RATES.value], _FPS.value,
                 _CLIP_FRAMES.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'vlm-jax generate: {e}') from e
  print(f'wrote {output}')
