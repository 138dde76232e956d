"""vlm-jax encode-video: VideoCLIP or CBT video embeddings of per-second features, as .npy files.

  vlm-jax encode-video --workdir RUN --features FEATS --output EMB \\
      [--segments segments.jsonl] [--per_second]

--features holds extract-features' `<video_id>.npy` (+ `<video_id>.times.npy`,
mapped to one row per second as make-records does; without times, rows are
taken as seconds). Writes `<id>.npy` per video, or per segment with
--segments (JSON/JSONL objects with `clip_id` or `id`, `video_id`, `start`,
`end` in seconds; prepare-youcook2's segments.jsonl works): the pooled
embedding [hidden], or with --per_second the states [T, hidden]. These are
the video inputs of `vlm-jax eval <task>` (vlm_jax/evaluate/_embeddings.py).
A CBT run gives its contextual clip states (windows of the training length at
half-window stride, overlaps averaged; vlm_jax/cbt/inference.py), or their
mean as the pooled vector: the inputs of `vlm-jax eval linear-probe`.
Missing or unreadable features are listed in manifest.json and skipped; a
re-run skips outputs that exist.

Across hosts: each of N processes (--process_index=I --process_count=N, or
--multihost) takes its share of the items (segments by seconds, videos by
features file size) and writes manifest-0000I-of-0000N.json; then --merge
(which encodes nothing) writes manifest.json, every item done, failed or
missing (exit 1 when any is missing).
"""

from absl import flags

from vlm_jax.commands import _share_flags

_WORKDIR = flags.DEFINE_string('workdir', None,
                                'A VideoCLIP or CBT `vlm-jax train` workdir, or MMPT\'s '
                                'checkpoint_best.pt.')
_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy features.')
_SEGMENTS = flags.DEFINE_string('segments', None, 'Optional JSON/JSONL of segments to cut.')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'Output folder of <id>.npy embeddings; local or gs:// (as every path).')
_PER_SECOND = flags.DEFINE_bool('per_second', False,
                                'Write [T, hidden] per-second states instead of [hidden].')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Windows per forward pass.')
_SHARE = _share_flags.define_flags(__name__, 'items', 'seconds or file size')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['workdir', 'features', 'output']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need neither JAX nor TensorFlow.
  # pylint: disable=import-outside-toplevel
  from vlm_jax.data import shares
  from vlm_jax.stages import encode_video
  # pylint: enable=import-outside-toplevel
  output = _OUTPUT.value
  try:
    if _SHARE.merge.value:
      m = encode_video.merge(_FEATURES.value, output, _SEGMENTS.value)
    else:
      index, count = _SHARE.resolve()
      m = encode_video.run(_WORKDIR.value, _FEATURES.value, output, _SEGMENTS.value,
                           _PER_SECOND.value, _BATCH_SIZE.value, process_index=index,
                           process_count=count)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'vlm-jax encode-video: {e}') from e
  name = shares.written_manifest(m)
  print(f'{output}: {m["written"]} written, {m["already_there"]} already there, '
        f'{m["failed"]} failed (see {name})')
