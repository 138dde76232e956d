"""vlm-jax encode-text: embed text lines with a BERT checkpoint or a trained run.

  vlm-jax encode-text --checkpoint DIR|minilm --input texts.txt --output out.npz
  vlm-jax encode-text --workdir RUN --input TEXTS.txt --output TEXTS.npy

With --checkpoint (a Hugging Face folder): writes `input_ids` [N, L],
`attention_mask` [N, L] and `last_hidden_state` [N, L, H] (float32), L = the
longest line in WordPieces (with [CLS]/[SEP]), capped at --max_length.

With --workdir (a `vlm-jax train` workdir; its config.json names the system,
and today VideoCLIP runs are the ones with text embeddings): writes the pooled
text embeddings [N, hidden] to the .npy and the texts, one per line in the
same order, beside it as .txt: the text input of `vlm-jax eval <task>` (whose
--write_texts writes the texts a task needs).
"""


from absl import flags

_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'minilm', 'Hugging Face BERT folder, or "minilm" for the packaged one.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'A VideoCLIP `vlm-jax train` workdir: pooled text embeddings (.npy) '
    'instead.')
_INPUT = flags.DEFINE_string('input', None, 'UTF-8 text file, one text per line.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output path: .npz, or .npy with --workdir.')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 512, 'Truncate texts to this many tokens.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Texts per forward pass.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['input', 'output']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need neither JAX nor TensorFlow.
  from vlm_jax.stages import encode_text  # pylint: disable=import-outside-toplevel
  output, workdir = _OUTPUT.value, _WORKDIR.value
  try:
    result = encode_text.run(_INPUT.value, output, _CHECKPOINT.value, workdir,
                             _MAX_LENGTH.value, _BATCH_SIZE.value)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise SystemExit(f'vlm-jax encode-text: {e}') from e
  shape = f', last_hidden_state {result["shape"]}' if result['shape'] else ''
  print(f'wrote {output}: {result["texts"]} texts{shape}')
