"""vlm-jax caption: VideoBERT captioning (SPEC section 1): features, captioner, captions.

  vlm-jax caption --videobert RUN --features FEATURES --codebook codebook.npz \\
      --train_segments train.jsonl --test_segments test.jsonl --output DIR \\
      [--config configs/captioner.py:paper] [--config.features.inputs=s3d] \\
      [--stages features,train,predict]

RUN is a `vlm-jax train` workdir. Segments files have one JSON object a line
with `video_id`, `start`, `end` (seconds) and `sentence` (the caption; needed
for training, and in the test file for scoring), as `vlm-jax prepare-youcook2`
writes them; a segment's id is its `clip_id`, else its `id`, else
`<video_id>_<n>` (n counts the video's segments in file order). FEATURES holds
`<video_id>.npy` clip features and `<video_id>.times.npy` clip times
(extract-features), --test_features those of the test videos if they are
elsewhere; the codebook turns them into visual tokens.

Stages, each skipped or resumed when its output is already there:
  features  per segment: the mean of VideoBERT's outputs over the video tokens
            and over the five masks of "now let's [MASK] the [MASK] to the
            [MASK], and then [MASK] the [MASK].", plus the mean S3D feature of
            its clips (config.features.inputs) -> DIR/features/{train,test}.npz
  train     the transformer captioner on the training segments' captions
            -> DIR/captioner (orbax checkpoints; a re-run resumes)
  predict   greedy captions of the test segments -> DIR/predictions.jsonl, the
            test sentences -> DIR/references.json, and their COCO scores
            (BLEU, METEOR, ROUGE-L, CIDEr) -> DIR/metrics.json; the same as
              vlm-jax eval captioning --references DIR/references.json \\
                  --predictions DIR/predictions.jsonl --output metrics.json
DIR/manifest.json records the inputs, counts, skipped segments (no features)
and scores. The captioner reads one feature vector per segment: a sequence of
length one for its encoder, as the paper feeds the pooled feature.
"""

import json
import os
from typing import Any, Optional

import numpy as np
import tqdm
from absl import flags
from ml_collections import config_flags

from vlm_jax.data import codebook as codebook_lib
from vlm_jax.data import segments as segments_lib
from vlm_jax.inference import caption_features
from vlm_jax.inference import videobert as videobert_inference
from vlm_jax.train import captioner

_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    'configs', 'captioner.py')
STAGES = ('features', 'train', 'predict')
SPLITS = ('train', 'test')

# allow_override: subcommands share flag names and tests import several into
# one process (the CLI imports only one).
_VIDEOBERT = flags.DEFINE_string('videobert', None, 'vlm-jax train workdir of the VideoBERT '
                                 '(not needed with --config.features.inputs=s3d).')
_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy clip features and '
                                '<video_id>.times.npy clip times.', allow_override=True)
_CODEBOOK = flags.DEFINE_string('codebook', None, 'Codebook .npz from build-codebook (not '
                                'needed with --config.features.inputs=s3d).',
                                allow_override=True)
_TEST_FEATURES = flags.DEFINE_string('test_features', None, 'Folder of the test videos\' '
                                     'features when apart from --features (the demo keeps '
                                     'features/train and features/test).')
_TRAIN_SEGMENTS = flags.DEFINE_string('train_segments', None, 'Training segments JSONL '
                                      '(video_id, start, end, sentence).')
_TEST_SEGMENTS = flags.DEFINE_string('test_segments', None, 'Segments to caption (JSONL: '
                                     'video_id, start, end; sentence to score).')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.', allow_override=True)
_CONFIG = config_flags.DEFINE_config_file(
    'config', _DEFAULT_CONFIG, 'Config file (default configs/captioner.py, preset paper).',
    lock_config=True, allow_override=True)
_STAGES = flags.DEFINE_list('stages', list(STAGES), 'Stages to run, in order: '
                            + ', '.join(STAGES) + '.')
_SCORE = flags.DEFINE_bool('score', True, 'Score the predictions against the test sentences '
                           '(COCO caption code; METEOR needs Java).')
# Marked required by the CLI when this command runs (not on import: tests
# import commands as libraries).
REQUIRED_FLAGS = ['features', 'train_segments', 'test_segments', 'output']


def _say(message: str) -> None:
  tqdm.tqdm.write(f'[vlm-jax caption] {message}')


def segment_ids(segments: list[dict]) -> list[str]:
  """`clip_id`, else `id`, else `<video_id>_<n>` (the n-th segment of its video)."""
  counts: dict[str, int] = {}
  out = []
  for s in segments:
    n = counts.get(s['video_id'], 0)
    counts[s['video_id']] = n + 1
    out.append(str(s.get('clip_id', s.get('id', f'{s["video_id"]}_{n}'))))
  if len(set(out)) != len(out):
    raise ValueError('segment ids are not unique (clip_id / id fields repeat)')
  return out


def _describe(path: str) -> list[Any]:
  st = os.stat(path)
  return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _latest_checkpoint(workdir: str) -> Optional[int]:
  folder = os.path.join(workdir, 'checkpoints')
  steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
  return max(steps) if steps else None


def load_videos(features_dir: str, codebook: Optional[codebook_lib.Codebook],
                video_ids) -> tuple[dict[str, caption_features.VideoClips], dict[str, str]]:
  """The clips of each video ({video_id: VideoClips}) and {video_id: why it is missing}."""
  found, missing = {}, {}
  for video_id in tqdm.tqdm(sorted(set(video_ids)), desc='load features', unit='video',
                            leave=False):
    path = os.path.join(features_dir, f'{video_id}.npy')
    times_path = os.path.join(features_dir, f'{video_id}.times.npy')
    if not (os.path.exists(path) and os.path.exists(times_path)):
      missing[video_id] = f'no {video_id}.npy and {video_id}.times.npy in {features_dir}'
      continue
    try:
      features = codebook_lib.load_features(path, codebook.dim if codebook else None)
    except ValueError as e:
      missing[video_id] = f'{path}: {e}'
      continue
    tokens = codebook_lib.assign(codebook, features) if codebook else None
    found[video_id] = caption_features.VideoClips(np.asarray(features), np.load(times_path),
                                                  tokens)
  return found, missing


def _features_stage(config, videobert: Optional[str], features_dirs: dict[str, str],
                    codebook_path: Optional[str], segments: dict[str, list[dict]],
                    segment_files: dict[str, str], output: str) -> dict[str, Any]:
  """Writes DIR/features/<split>.npz (ids, features, sentences) unless up to date."""
  inputs = config.features.inputs
  uses_videobert = inputs.startswith('videobert')
  if uses_videobert and not (videobert and codebook_path):
    raise ValueError(f'features.inputs={inputs!r} needs --videobert and --codebook')
  folder = os.path.join(output, 'features')
  os.makedirs(folder, exist_ok=True)
  description = dict(
      inputs=inputs, videobert=[os.path.abspath(videobert), _latest_checkpoint(videobert)]
      if uses_videobert else None,
      codebook=_describe(codebook_path) if uses_videobert else None)
  loaded, codebook, summary = None, None, {}
  for split in SPLITS:
    target, meta_path = os.path.join(folder, f'{split}.npz'), os.path.join(folder, f'{split}.json')
    wanted = dict(description, segments=_describe(segment_files[split]),
                  features=os.path.abspath(features_dirs[split]))
    if os.path.exists(target) and os.path.exists(meta_path):
      with open(meta_path) as f:
        meta = json.load(f)
      if meta['inputs'] == wanted:
        _say(f'{target} is up to date')
        summary[split] = meta
        continue
    if uses_videobert and loaded is None:
      codebook = codebook_lib.Codebook.load(codebook_path)
      loaded = videobert_inference.load(videobert)
      if loaded.vocab.num_visual_tokens != codebook.num_leaves:
        raise ValueError(f'{codebook_path}: {codebook.num_leaves} leaves, but the model in '
                         f'{videobert} has {loaded.vocab.num_visual_tokens} visual tokens')
    videos, missing = load_videos(features_dirs[split], codebook,
                                  [s['video_id'] for s in segments[split]])
    ids = segment_ids(segments[split])
    kept = [(i, s) for i, s in zip(ids, segments[split]) if s['video_id'] in videos]
    skipped = [dict(id=i, video_id=s['video_id'], reason=missing[s['video_id']])
               for i, s in zip(ids, segments[split]) if s['video_id'] not in videos]
    if not kept:
      raise ValueError(f'no {split} segment has features in {features_dirs[split]}')
    _say(f'{split}: features of {len(kept)} segments ({inputs})')
    array = caption_features.segment_features([s for _, s in kept], videos, loaded, inputs,
                                              config.features.batch_size)
    tmp = target + '.tmp.npz'
    np.savez(tmp, ids=np.array([i for i, _ in kept]), features=array,
             sentences=np.array([str(s.get('sentence', '')) for _, s in kept]))
    os.replace(tmp, target)
    meta = dict(inputs=wanted, segments=len(kept), feature_dim=int(array.shape[1]),
                skipped=skipped,
                videobert_step=loaded.step if loaded is not None else None)
    with open(meta_path, 'w') as f:
      json.dump(meta, f, indent=1)
    summary[split] = meta
  return summary


def _load_split(output: str, split: str) -> dict[str, np.ndarray]:
  path = os.path.join(output, 'features', f'{split}.npz')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} is missing: run the features stage first')
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def _train_stage(config, output: str) -> dict[str, Any]:
  data = _load_split(output, 'train')
  if not all(data['sentences']):
    raise ValueError('every training segment needs a sentence')
  workdir = os.path.join(output, 'captioner')
  # A checkpoint trained on other features cannot be resumed on these.
  stamp = os.path.join(workdir, 'features.json')
  with open(os.path.join(output, 'features', 'train.json')) as f:
    features_meta = json.load(f)['inputs']
  if os.path.exists(stamp):
    with open(stamp) as f:
      if json.load(f) != features_meta:
        raise ValueError(f'{workdir} was trained on other features; remove it to retrain')
  os.makedirs(workdir, exist_ok=True)
  with open(stamp, 'w') as f:
    json.dump(features_meta, f, indent=1)
  _say(f'training the captioner on {len(data["ids"])} captions ({config.train.num_steps} steps)')
  captioner.train(config, data['features'], [str(s) for s in data['sentences']], workdir)
  with open(os.path.join(workdir, 'manifest.json')) as f:
    return json.load(f)


def _predict_stage(output: str, score: bool) -> dict[str, Any]:
  trained = captioner.load(os.path.join(output, 'captioner'))
  data = _load_split(output, 'test')
  predicted = captioner.captions(trained, data['features'], progress=True)
  predictions = os.path.join(output, 'predictions.jsonl')
  with open(predictions + '.tmp', 'w', encoding='utf-8') as f:
    for i, text in zip(data['ids'], predicted):
      f.write(json.dumps({'id': str(i), 'caption': text}, ensure_ascii=False) + '\n')
  os.replace(predictions + '.tmp', predictions)
  references = {str(i): [str(s)] for i, s in zip(data['ids'], data['sentences']) if s}
  result: dict[str, Any] = dict(predictions=len(predicted), references=len(references),
                                captioner_step=trained.step)
  if references:
    with open(os.path.join(output, 'references.json'), 'w', encoding='utf-8') as f:
      json.dump(references, f, indent=1, ensure_ascii=False)
  if score and references:
    # Imported here: the module defines the eval binary's flags (--references, ...),
    # which are not this command's.
    from vlm_jax.evaluate import captioning  # pylint: disable=import-outside-toplevel
    metrics = captioning.run(os.path.join(output, 'references.json'), predictions,
                             os.path.join(output, 'metrics.json'))
    result.update(scores=metrics['scores'], tokenizer=metrics['tokenizer'],
                  meteor_skipped=metrics['meteor_skipped'])
  return result


def run(config, features_dir: str, train_segments: str, test_segments: str, output: str,
        videobert: Optional[str] = None, codebook: Optional[str] = None,
        stages=STAGES, score: bool = True,
        test_features_dir: Optional[str] = None) -> dict[str, Any]:
  """Runs the stages; writes and returns DIR/manifest.json's dict."""
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f'unknown stages {unknown}; choose from {", ".join(STAGES)}')
  os.makedirs(output, exist_ok=True)
  manifest_path = os.path.join(output, 'manifest.json')
  manifest: dict[str, Any] = {}
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
  manifest.update(command='caption', output=os.path.abspath(output),
                  config=json.loads(config.to_json_best_effort()))
  if 'features' in stages:
    files = {'train': train_segments, 'test': test_segments}
    segments = {'train': segments_lib.load(train_segments,
                                           ('video_id', 'start', 'end', 'sentence')),
                'test': segments_lib.load(test_segments)}
    dirs = {'train': features_dir, 'test': test_features_dir or features_dir}
    manifest['features'] = _features_stage(config, videobert, dirs, codebook, segments, files,
                                           output)
  if 'train' in stages:
    manifest['train'] = _train_stage(config, output)
  if 'predict' in stages:
    manifest['predict'] = _predict_stage(output, score)
  with open(manifest_path + '.tmp', 'w') as f:
    json.dump(manifest, f, indent=1, default=str)
  os.replace(manifest_path + '.tmp', manifest_path)
  return manifest


def main(argv):
  del argv
  try:
    manifest = run(_CONFIG.value, _FEATURES.value, _TRAIN_SEGMENTS.value, _TEST_SEGMENTS.value,
                   _OUTPUT.value, _VIDEOBERT.value, _CODEBOOK.value, _STAGES.value,
                   _SCORE.value, _TEST_FEATURES.value)
  except (ValueError, FileNotFoundError) as e:  # SegmentsError is a ValueError
    raise SystemExit(f'vlm-jax caption: {e}') from e
  predict = manifest.get('predict', {})
  scores = predict.get('scores')
  if scores:
    shown = ' '.join(f'{m} {100 * scores[m]:.2f}' if m != 'CIDEr' else f'{m} {scores[m]:.3f}'
                     for m in ('Bleu_3', 'Bleu_4', 'METEOR', 'ROUGE_L', 'CIDEr')
                     if scores.get(m) is not None)
    print(f'{predict["predictions"]} captions: {shown}')
  print(f'wrote {_OUTPUT.value} (see {os.path.join(_OUTPUT.value, "manifest.json")})')
