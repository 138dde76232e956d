"""The caption job: VideoBERT or CBT caption features, the captioner, scored captions.

Used by `vlm-jax caption` and the demo; see that command for the stages and
files.
"""

import collections
import json
import os
from typing import Any, Optional, Sequence

import numpy as np
import tqdm

from vlm_jax.captioning import train as captioner
from vlm_jax.cbt import inference as cbt_inference
from vlm_jax.data import feature_records
from vlm_jax.data import files as files_lib
from vlm_jax.data import segments as segments_lib
from vlm_jax.evaluate import captioning as caption_eval
from vlm_jax.videobert import caption_features
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import inference as videobert_inference

STAGES = ('features', 'train', 'predict')
# config.features.inputs: a system's features of the segment, with or without pooled S3D.
INPUTS = caption_features.INPUTS + ('cbt+s3d', 'cbt')
SPLITS = ('train', 'test')


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
    path, times_path = files_lib.feature_paths(features_dir, video_id)
    if not (os.path.exists(path) and os.path.exists(times_path)):
      missing[video_id] = f'no {video_id}.npy and {video_id}{files_lib.TIMES_SUFFIX} in {features_dir}'
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


def _segment_features(inputs: str, segments: list[dict],
                      videos: dict[str, caption_features.VideoClips], loaded,
                      batch_size: int) -> np.ndarray:
  """[N, D] caption features of the segments (config.features.inputs)."""
  if not inputs.startswith('cbt'):
    return caption_features.segment_features(segments, videos, loaded, inputs, batch_size)
  # CBT: the mean of its contextual clip states over the segment's seconds, the
  # states of the whole video (the context a clip is encoded in).
  ids = sorted({s['video_id'] for s in segments})
  per_second = [feature_records.per_second(videos[i].features.astype(np.float32),
                                           videos[i].times) for i in ids]
  states = dict(zip(ids, cbt_inference.clip_states(loaded, per_second, batch_size=batch_size)))
  parts = [cbt_inference.segment_means(states, segments)]
  if inputs.endswith('s3d'):
    parts.append(caption_features.segment_features(segments, videos, None, 's3d'))
  return np.concatenate(parts, axis=1).astype(np.float32)


def _load_model(inputs: str, model: str, codebook_path: Optional[str]):
  """The VideoBERT (with its codebook) or CBT run the inputs need."""
  if inputs.startswith('cbt'):
    return cbt_inference.load(model), None
  codebook = codebook_lib.Codebook.load(codebook_path)
  loaded = videobert_inference.load(model)
  if loaded.vocab.num_visual_tokens != codebook.num_leaves:
    raise ValueError(f'{codebook_path}: {codebook.num_leaves} leaves, but the model in '
                     f'{model} has {loaded.vocab.num_visual_tokens} visual tokens')
  return loaded, codebook


def _features_stage(config, model: Optional[str], features_dirs: dict[str, str],
                    codebook_path: Optional[str], segments: dict[str, list[dict]],
                    segment_files: dict[str, str], output: str) -> dict[str, Any]:
  """Writes DIR/features/<split>.npz (ids, features, sentences) unless up to date."""
  inputs = config.features.inputs
  if inputs not in INPUTS:
    raise ValueError(f'config.features.inputs: {inputs!r}; one of {", ".join(INPUTS)}')
  uses_videobert, uses_cbt = inputs.startswith('videobert'), inputs.startswith('cbt')
  if uses_videobert and not (model and codebook_path):
    raise ValueError(f'features.inputs={inputs!r} needs --videobert and --codebook')
  if uses_cbt and not model:
    raise ValueError(f'features.inputs={inputs!r} needs --cbt')
  folder = os.path.join(output, 'features')
  os.makedirs(folder, exist_ok=True)
  description = dict(
      inputs=inputs, model=[os.path.abspath(model), _latest_checkpoint(model)]
      if uses_videobert or uses_cbt else None,
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
    if (uses_videobert or uses_cbt) and loaded is None:
      loaded, codebook = _load_model(inputs, model, codebook_path)
    videos, missing = load_videos(features_dirs[split], codebook,
                                  [s['video_id'] for s in segments[split]])
    ids = segment_ids(segments[split])
    kept = [(i, s) for i, s in zip(ids, segments[split]) if s['video_id'] in videos]
    skipped = [dict(id=i, video_id=s['video_id'], reason=missing[s['video_id']])
               for i, s in zip(ids, segments[split]) if s['video_id'] not in videos]
    if not kept:
      raise ValueError(f'no {split} segment has features in {features_dirs[split]}')
    _say(f'{split}: features of {len(kept)} segments ({inputs})')
    array = _segment_features(inputs, [s for _, s in kept], videos, loaded,
                              config.features.batch_size)
    # A file object: np.savez would append '.npz' to the temporary name.
    with files_lib.atomic_path(target) as tmp, open(tmp, 'wb') as f:
      np.savez(f, ids=np.array([i for i, _ in kept]), features=array,
               sentences=np.array([str(s.get('sentence', '')) for _, s in kept]))
    meta = dict(inputs=wanted, segments=len(kept), feature_dim=int(array.shape[1]),
                skipped=skipped, model_step=loaded.step if loaded is not None else None)
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


def nearest_captions(train_features: np.ndarray, train_sentences: Sequence[str],
                     test_features: np.ndarray) -> list[str]:
  """[N_test] the sentence of each test segment's nearest training segment.

  Nearest by cosine similarity of the features standardised per dimension on
  the training set (the captioner's own inputs, none of which would otherwise
  outweigh the rest by its scale).

  Args:
    train_features: [N_train, D].
    train_sentences: [N_train].
    test_features: [N_test, D].
  """
  mean, scale = train_features.mean(0), train_features.std(0) + 1e-6

  def unit(x):
    x = (x - mean) / scale
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)

  nearest = (unit(test_features) @ unit(train_features).T).argmax(1)
  return [str(train_sentences[i]) for i in nearest]


def baseline_captions(output: str) -> dict[str, list[str]]:
  """Captions of the test segments without the captioner: the nearest training
  segment's sentence (`nearest_neighbour`), the most frequent training sentence."""
  train, test = _load_split(output, 'train'), _load_split(output, 'test')
  sentences = [str(s) for s in train['sentences']]
  frequent = collections.Counter(sentences).most_common(1)[0][0]
  return {'nearest_neighbour': nearest_captions(train['features'], sentences, test['features']),
          'most_frequent': [frequent] * len(test['ids'])}


def _write_predictions(path: str, ids, captions: Sequence[str]) -> None:
  files_lib.write_text(path, ''.join(
      json.dumps({'id': str(i), 'caption': text}, ensure_ascii=False) + '\n'
      for i, text in zip(ids, captions)))


def _predict_stage(output: str, score: bool) -> dict[str, Any]:
  trained = captioner.load(os.path.join(output, 'captioner'))
  data = _load_split(output, 'test')
  predicted = captioner.captions(trained, data['features'], progress=True)
  predictions = os.path.join(output, 'predictions.jsonl')
  _write_predictions(predictions, data['ids'], predicted)
  references = {str(i): [str(s)] for i, s in zip(data['ids'], data['sentences']) if s}
  result: dict[str, Any] = dict(predictions=len(predicted), references=len(references),
                                captioner_step=trained.step)
  if references:
    with open(os.path.join(output, 'references.json'), 'w', encoding='utf-8') as f:
      json.dump(references, f, indent=1, ensure_ascii=False)
  if score and references:
    metrics = caption_eval.run(os.path.join(output, 'references.json'), predictions,
                               os.path.join(output, 'metrics.json'))
    result.update(scores=metrics['scores'], tokenizer=metrics['tokenizer'],
                  meteor_skipped=metrics['meteor_skipped'])
    # The same scorer on captions that need no captioner: what it has to beat.
    result['baselines'] = {}
    for name, captions in baseline_captions(output).items():
      path = os.path.join(output, f'predictions_{name}.jsonl')
      _write_predictions(path, data['ids'], captions)
      scored = caption_eval.run(os.path.join(output, 'references.json'), path,
                                os.path.join(output, f'metrics_{name}.json'))
      result['baselines'][name] = dict(scores=scored['scores'], predictions=path)
  return result


def run(config, features_dir: str, train_segments: str, test_segments: str, output: str,
        videobert: Optional[str] = None, codebook: Optional[str] = None,
        stages=STAGES, score: bool = True,
        test_features_dir: Optional[str] = None, cbt: Optional[str] = None) -> dict[str, Any]:
  """Runs the stages; writes and returns DIR/manifest.json's dict.

  `videobert` (with `codebook`) or `cbt` is the run whose features the captioner
  reads (config.features.inputs says which).
  """
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
    model = cbt if config.features.inputs.startswith('cbt') else videobert
    manifest['features'] = _features_stage(config, model, dirs, codebook, segments, files,
                                           output)
  if 'train' in stages:
    manifest['train'] = _train_stage(config, output)
  if 'predict' in stages:
    manifest['predict'] = _predict_stage(output, score)
  files_lib.write_json(manifest_path, manifest, indent=1)
  return manifest
