"""vlm-jax eval action-classification: VideoBERT zero-shot verb and noun classification.

  vlm-jax eval action-classification --workdir RUN --segments segments.jsonl \\
      --features FEATURES_DIR --codebook codebook.npz --verbs verbs.txt \\
      --nouns nouns.txt --output metrics.json

RUN is a `vlm-jax train` workdir. Each line of segments.jsonl names a
`video_id`, `start`, `end` (seconds), `verb` and `noun`; FEATURES_DIR holds
`<video_id>.npy` clip features and `<video_id>.times.npy` clip times (from
`vlm-jax extract-features`), turned into visual tokens with the codebook. The
model fills "now let me show you how to [MASK] the [MASK]." followed by the
segment's visual tokens; top-1 and top-5 accuracy for verbs and nouns are
reported beside the language prior (the same template without video) and
chance, as in the paper's table. Segments whose features are missing, or whose
label is not in the vocabulary files, are listed in the output and skipped.
"""

from absl import flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'vlm-jax train workdir.')
_SEGMENTS = flags.DEFINE_string('segments', None, 'Segments JSONL (video_id, start, end, '
                                'verb, noun).')
_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy and '
                                '<video_id>.times.npy.')
_CODEBOOK = flags.DEFINE_string('codebook', None, 'Codebook .npz from build-codebook.')
_VERBS = flags.DEFINE_string('verbs', None, 'Verb vocabulary, one per line.')
_NOUNS = flags.DEFINE_string('nouns', None, 'Noun vocabulary, one per line.')
_OUTPUT = flags.DEFINE_string('output', None, 'Metrics JSON to write.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['workdir', 'segments', 'features', 'codebook', 'verbs', 'nouns', 'output']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need neither JAX nor TensorFlow.
  from vlm_jax.stages import action_classification  # pylint: disable=import-outside-toplevel
  output = _OUTPUT.value
  try:
    result = action_classification.run(_WORKDIR.value, _SEGMENTS.value, _FEATURES.value,
                                       _CODEBOOK.value, _VERBS.value, _NOUNS.value, output)
  except (ValueError, FileNotFoundError) as e:  # SegmentsError is a ValueError
    raise SystemExit(f'vlm-jax eval action-classification: {e}') from e
  print(action_classification.summary(result))
  print(f'wrote {output}')
