"""vlm-jax build-codebook: VideoBERT's visual-token codebook (hierarchical k-means).

  vlm-jax build-codebook --features DIR --output codebook.npz \\
      [--levels 4] [--k 12] [--sample_size 200000] [--seed 0] [--niter 20] \\
      [--beam 4] [--refine_rounds 2] [--standardize]

Reads every `<video_id>.npy` in DIR ([num_clips, D] float16 or float32 clip
features, e.g. S3D), clusters a seeded uniform sample of the clips into
k**levels leaves and writes the codebook .npz (`leaf_centroids` [k**levels, D]
is the visual-token table; see vlm_jax.videobert.codebook) with, for each leaf, the
training clip nearest its centroid as `nearest_video_id` / `nearest_clip_index`
('' / -1 for a leaf no clip reaches), and beside it `<output stem>.centroids.npy`
[k**levels, D]: the leaf centroids in the features' own space, row i = visual
token i, which `--config.model.visual_init` of `vlm-jax train` reads (the
paper's visual-token table). `--beam 4 --refine_rounds 2` (the
defaults) descend with a beam of 4 and refine the fitted tree twice: at 200k x
1024, 4 x 12, that brings the quantisation error from +33% to +14% of a flat
k-means with as many centroids (benchmarks/RESULTS.md); `--beam 1
--refine_rounds 0` is the plain greedy tree. A file that cannot be read, is not 2-D, is
not finite or has another D (the first good file's) is reported and skipped.
`<output>.manifest.json` lists inputs, parameters, counts and failures; a re-run
with the same inputs and parameters finds it and does nothing.
"""

from absl import flags

from vlm_jax.stages import build_codebook

_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy clip features.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output codebook .npz path.')
_LEVELS = flags.DEFINE_integer('levels', 4, 'Tree depth (VideoBERT: 4).')
_K = flags.DEFINE_integer('k', 12, 'Branching factor (VideoBERT: 12).')
_SAMPLE_SIZE = flags.DEFINE_integer(
    'sample_size', 200_000, 'Cluster at most this many clips (seeded uniform sample); 0: all.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds the sample and the k-means.')
_NITER = flags.DEFINE_integer('niter', 20, 'k-means iterations per tree node.')
_BEAM = flags.DEFINE_integer('beam', 4, 'Nodes kept per level when descending the tree '
                             '(saved with the codebook); 1: greedy descent.')
_REFINE_ROUNDS = flags.DEFINE_integer(
    'refine_rounds', 2, 'Lloyd rounds over the whole fitted tree (each centroid becomes the '
    'mean of the points that descend under it).')
_STANDARDIZE = flags.DEFINE_bool(
    'standardize', False, 'Cluster per-dimension standardised features (the mean and scale '
    'are saved with the codebook and applied by every assignment). Off: the paper clusters '
    'S3D features as they are.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['features', 'output']


def main(argv):
  del argv
  output = _OUTPUT.value
  try:
    manifest = build_codebook.run(_FEATURES.value, output, _LEVELS.value, _K.value,
                                  _SAMPLE_SIZE.value, _SEED.value, _NITER.value,
                                  _STANDARDIZE.value, _BEAM.value, _REFINE_ROUNDS.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'vlm-jax build-codebook: {e}') from e
  c = manifest['counts']
  if manifest['skipped']:
    print(f'{output} is up to date (same inputs and parameters); nothing to do')
    return
  print(f'wrote {output}: {c["leaves"]} leaves ({c["leaves_reached"]} reached) from '
        f'{c["sampled"]} of {c["clips"]} clips in {c["videos"]} videos, D = {c["dim"]}; '
        f'{c["failed"]} files failed (see {build_codebook.manifest_path(output)})')
