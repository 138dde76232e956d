"""`vlm-jax demo --system clipbert`: the rendered corpus through ClipBERT, from pixels.

Stages (each resumable):
  corpus    the rendered corpus (shared with the other demos: WORKDIR/corpus)
  features  its S3D clip features (shared: WORKDIR/features), which only the
            baseline reads: ClipBERT reads the videos' frames
  items     WORKDIR/clipbert_items: per split a jsonl of one {"video", "text",
            "start", "end"} caption pair a narrated step (the custom-dataset
            format `vlm-jax train --config configs/clipbert.py` reads), and
            5-way multiple-choice items for test (the step's sentence
            among those of 4 steps of other verb-noun pairs of the same split)
  train     ClipBERT's tiny preset (MiniLM's BERT, a small random ResNet)
            end to end on the training pairs, checkpointed along the way; the
            baseline is the same cross-encoder on the frozen random-weight S3D
            features the other demos read, one token a clip
            (model.feature_dim); with config.clipbert_ablation also the
            model with its frame encoder frozen at its random init (only the
            visual embeddings and the transformer learn)
  evaluate  every checkpoint of each run on dev text-to-video retrieval; the one
            with the best dev R@1 is then scored on test: retrieval (each
            narrated step's sentence against its own clip and those of
            config.clipbert_candidates - 1 other steps of the split, every pair
            through the cross-encoder) and multiple choice, with 95% intervals,
            next to chance; report_clipbert/index.html with the sampled clips of
            a few test steps
"""

import json
import os
from typing import Any

import numpy as np

from vlm_jax.clipbert import data as data_lib
from vlm_jax.clipbert import inference
from vlm_jax.clipbert import trainer
from vlm_jax.data import files as files_lib
from vlm_jax.data import frames as frames_lib
from vlm_jax.demo import common, report
from vlm_jax.evaluate import cross_retrieval
from vlm_jax.metrics import intervals
from vlm_jax.metrics import retrieval as retrieval_lib
from vlm_jax.train import report as train_report

RUN_LABELS = {'end_to_end': 'ClipBERT, frame encoder trained end to end',
              's3d_features': 'the same cross-encoder on frozen S3D features (random weights)',
              'frozen_frames': 'ClipBERT, frame encoder frozen at its random init'}


def runs(config) -> tuple[str, ...]:
  """The runs the demo trains: ClipBERT and its frozen-features baseline (+ the ablation)."""
  return ('end_to_end', 's3d_features') + (('frozen_frames',) if config.clipbert_ablation
                                           else ())


def write_items(folder: str, by_split: dict[str, list[dict]], num_options: int,
                seed: int) -> dict[str, dict[str, str]]:
  """The caption pairs of every split and the multiple-choice items of test.

  Returns {split: {'pairs': path}}, test's with 'choice': path too.
  """
  os.makedirs(folder, exist_ok=True)
  paths = {}
  for split, videos in by_split.items():
    steps = [dict(s, video=v['path']) for v in videos for s in v['steps'] if s['sentence']]
    pairs = [dict(video=s['video'], text=s['sentence'], start=s['start'], end=s['end'])
             for s in steps]
    paths[split] = {'pairs': os.path.join(folder, f'{split}_pairs.jsonl')}
    _write_jsonl(paths[split]['pairs'], pairs)
    if split != 'test':
      continue
    paths[split]['choice'] = os.path.join(folder, f'{split}_choice.jsonl')
    _write_jsonl(paths[split]['choice'], choice_items(steps, num_options, seed))
  return paths


def choice_items(steps: list[dict], num_options: int, seed: int) -> list[dict]:
  """Per step: its sentence and those of num_options - 1 steps of other verb-noun pairs
  (each pair once), in a random order keyed by the seed; "answer" = the sentence's index."""
  rng = np.random.default_rng(seed)
  items = []
  for step in steps:
    others, seen = [], {(step['verb'], step['noun'])}
    for k in rng.permutation(len(steps)):
      pair = (steps[k]['verb'], steps[k]['noun'])
      if pair not in seen:
        seen.add(pair)
        others.append(steps[k]['sentence'])
      if len(others) == num_options - 1:
        break
    if len(others) < num_options - 1:
      raise ValueError(f'{num_options}-way multiple choice needs {num_options} verb-noun '
                       f'pairs in a split, it has {len(seen)}')
    answer = int(rng.integers(num_options))
    options = others[:answer] + [step['sentence']] + others[answer:]
    items.append(dict(video=step['video'], question='', options=options, answer=answer,
                      start=step['start'], end=step['end']))
  return items


def _write_jsonl(path: str, rows: list[dict]) -> None:
  files_lib.write_text(path, ''.join(json.dumps(r) + '\n' for r in rows))


def _train_config(config, items: str, name: str, workdir: str):
  c = config.clipbert.copy_and_resolve_references()
  with c.unlocked():
    c.data.train_jsonl = items
    c.seed = config.seed
    if name == 'frozen_frames':
      c.optim.frame_encoder_learning_rate = 0.0
    if name == 's3d_features':
      c.model.feature_dim = config.clipbert_feature_dim
      c.data.feature_dir = os.path.join(workdir, 'features')
  return c


def candidate_sets(num_queries: int, size: int, seed: int) -> np.ndarray:
  """[num_queries, size] clip indices: query i's own clip first, then size - 1 others
  drawn without replacement (keyed by the seed)."""
  if num_queries < size:
    raise ValueError(f'{size} candidates per query need {size} clips, the split has '
                     f'{num_queries}')
  rng = np.random.default_rng(seed)
  sets = np.empty((num_queries, size), np.int64)
  for i in range(num_queries):
    others = rng.choice(num_queries - 1, size - 1, replace=False)
    sets[i] = np.concatenate([[i], others + (others >= i)])
  return sets


def retrieval(loaded: inference.Loaded, pairs: data_lib.ItemList, num_candidates: int,
              seed: int) -> dict[str, Any]:
  """Text-to-video retrieval of each pair's (video, span) clip by its text among
  `num_candidates` clips of the split (`candidate_sets`), every pair through the
  cross-encoder: R@k with intervals, and each query's first-ranked clip (`top1`)."""
  refs = [(i.video, i.span) for i in pairs.items]
  tokens = inference.encode_videos(loaded, refs)
  if tokens.failures:
    raise files_lib.DataError(f'{len(tokens.failures)} clips did not decode: '
                              f'{tokens.failures[0][1]}')
  sets = candidate_sets(len(refs), num_candidates, seed)
  texts = [pairs.items[i].text for i in range(len(refs)) for _ in range(num_candidates)]
  scores = inference.pair_scores(loaded, texts, tokens.tokens[sets.ravel()]).reshape(sets.shape)
  ranks = retrieval_lib.ranks_from_similarity(scores, np.zeros(len(refs), np.int64))
  metrics = cross_retrieval.rank_metrics(ranks)
  metrics['top1'] = [int(k) for k in sets[np.arange(len(refs)), np.argmax(scores, axis=1)]]
  return metrics


def multiple_choice(loaded: inference.Loaded, choice: data_lib.ItemList) -> dict[str, Any]:
  """Accuracy (with its interval) over the multiple-choice items."""
  tokens = inference.encode_videos(loaded, [(i.video, i.span) for i in choice.items])
  scores = inference.multiple_choice_scores(loaded, choice.items, tokens.tokens)
  return cross_retrieval.multiple_choice_accuracy(
      scores, np.asarray([i.answer for i in choice.items]))


def _cached(path: str, compute) -> dict[str, Any]:
  """A result kept at `path`, computed once (the evaluation resumes run by run)."""
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  common.say(f'evaluating {os.path.basename(os.path.dirname(path))}: '
             f'{os.path.splitext(os.path.basename(path))[0]}')
  result = compute()
  files_lib.write_json(path, result)
  return result


def evaluate_run(run_dir: str, items: dict[str, dict[str, str]], num_candidates: int,
                 seed: int) -> dict[str, Any]:
  """Every checkpoint on dev retrieval; the best one (R@1, then the later) on test."""
  read = lambda path: data_lib.read_items(path, None)
  saved = train_report.read_json(os.path.join(run_dir, 'manifest.json'))['checkpoint_steps']
  dev = {}
  if 'dev' in items:
    for step in saved:
      dev[step] = _cached(os.path.join(run_dir, f'eval_dev_{step}.json'), lambda s=step: dict(
          retrieval=retrieval(inference.load(run_dir, s), read(items['dev']['pairs']),
                              num_candidates, seed)))
    chosen = max(saved, key=lambda s: (dev[s]['retrieval']['R@1'], s))
  else:
    chosen = max(saved)

  def test():
    loaded = inference.load(run_dir, chosen)
    return dict(retrieval=retrieval(loaded, read(items['test']['pairs']), num_candidates, seed),
                multiple_choice=multiple_choice(loaded, read(items['test']['choice'])))

  result = _cached(os.path.join(run_dir, f'eval_test_{chosen}.json'), test)
  return dict(step=chosen, test=result,
              dev={int(s): d['retrieval']['R@1'] for s, d in dev.items()})


def run(workdir: str, config) -> dict[str, Any]:
  """Runs (or resumes) every stage under `workdir`; returns the report's metrics."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  stages = common.Stages()
  report_dir = os.path.join(workdir, 'report_clipbert')
  os.makedirs(report_dir, exist_ok=True)
  by_split = common.front_end(workdir, config, stages)
  items = stages.run('items', lambda: write_items(
      os.path.join(workdir, 'clipbert_items'), by_split, config.clipbert_options, config.seed))
  names = runs(config)
  for name in names:
    stages.run(f'train_{name}', lambda n=name: trainer.train(
        _train_config(config, items['train']['pairs'], n, workdir),
        os.path.join(workdir, f'clipbert_{n}')), 'clipbert')
  results = stages.run('evaluate', lambda: {
      name: evaluate_run(os.path.join(workdir, f'clipbert_{name}'), items,
                         config.clipbert_candidates, config.seed) for name in names})
  for name in names:
    train_report.plot_curves(os.path.join(workdir, f'clipbert_{name}', 'metrics.jsonl'),
                             os.path.join(report_dir, f'curves_{name}.png'))
  test_pairs = data_lib.read_items(items['test']['pairs'], None).items
  chosen = inference.load(os.path.join(workdir, 'clipbert_end_to_end'),
                          results['end_to_end']['step'])
  top1 = results['end_to_end']['test']['retrieval']['top1']
  report.save_figure(clips_figure(sampled_clips(chosen, test_pairs, top1)),
                     os.path.join(report_dir, 'test_clips.png'))
  k = config.clipbert_candidates
  metrics = {
      'runs': results,
      'chance': {'R@1': 1 / k, 'R@5': min(1.0, 5 / k), 'R@10': min(1.0, 10 / k),
                 'multiple_choice': 1 / config.clipbert_options},
      'num_test_queries': len(test_pairs),
      'candidates': k,
      'multiple_choice_options': config.clipbert_options,
      'corpus': {split: len(videos) for split, videos in by_split.items()},
      'train_config': {'steps': config.clipbert.train.num_steps,
                       'videos_per_batch': config.clipbert.train.global_batch_size,
                       'clips': config.clipbert.data.num_clips,
                       'frames_per_clip': config.clipbert.data.num_frames,
                       'image_size': config.clipbert.data.image_size},
      'stages': stages.timings,
  }
  html = write_report(report_dir, metrics)
  common.say(f'report: {html}')
  return metrics


def sampled_clips(loaded: inference.Loaded, pairs: list[data_lib.Item], top1: list[int],
                  count: int = 4) -> list[tuple[np.ndarray, str]]:
  """For `count` test steps spread over the list: the frames ClipBERT's inference samples
  (uint8 [clips * frames, S, S, 3]) and a caption: the step's sentence, and the sentence
  of the step the model ranks first for it."""
  size = int(loaded.config.data.image_size)
  panels = []
  for i in np.linspace(0, len(pairs) - 1, count).round().astype(int):
    pair, first = pairs[i], pairs[top1[i]]
    times = inference.clip_times(loaded, pair.video, pair.span)
    pixels = frames_lib.decode_at(pair.video, times, size).reshape(-1, size, size, 3)
    panels.append((pixels, f'"{pair.text}"  ({pair.span[0]:.1f}-{pair.span[1]:.1f} s)\n'
                           f'ranked first: "{first.text}"'
                           f'{"" if first.text == pair.text else "  (another step)"}'))
  return panels


def clips_figure(panels: list[tuple[np.ndarray, str]]):
  """A matplotlib Figure of `sampled_clips`' panels, two a row, each captioned above."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  columns = max(len(pixels) for pixels, _ in panels)
  grid = (-(-len(panels) // 2), 2)
  # Each panel wide enough for its two caption lines, whatever its number of frames.
  panel = max(1.4 * columns, 4.0)
  fig = plt.figure(figsize=(2 * panel, 2.0 * grid[0] + 0.4), layout='constrained')
  for subfig, (pixels, caption) in zip(fig.subfigures(*grid).ravel(), panels):
    for c, ax in enumerate(subfig.subplots(1, columns, squeeze=False)[0]):
      ax.axis('off')
      if c < len(pixels):
        ax.imshow(pixels[c])
    subfig.suptitle(caption, x=0.02, ha='left', fontsize=8)
  fig.suptitle('test steps: the frames ClipBERT samples (clips x frames, left to right)',
               fontsize=10, fontweight='bold')
  return fig


def write_report(report_dir: str, metrics: dict[str, Any]) -> str:
  chance, by_run = metrics['chance'], metrics['runs']
  rows = []
  for name in by_run:
    r, mc = by_run[name]['test']['retrieval'], by_run[name]['test']['multiple_choice']
    rows.append([RUN_LABELS[name], by_run[name]['step']]
                + [intervals.describe(r, k) for k in ('R@1', 'R@5', 'R@10')]
                + [r['median_rank'], intervals.describe(mc, 'accuracy')])
  rows.append(['chance', ''] + [report.percent(chance[k]) for k in ('R@1', 'R@5', 'R@10')]
              + ['', report.percent(chance['multiple_choice'])])
  dev_rows = [[RUN_LABELS[name], step, report.percent(r1)]
              for name in by_run for step, r1 in sorted(by_run[name]['dev'].items())]
  t = metrics['train_config']
  curves = report.gallery([(f'curves_{n}.png', RUN_LABELS[n]) for n in by_run])
  sections = [
      ('What ran', f'<p>Synthetic cooking videos were rendered with narration. ClipBERT read '
       f'their pixels: {t["clips"]} clips x {t["frames_per_clip"]} frames of {t["image_size"]} '
       f'px per narrated step, a small random ResNet, MiniLM\'s BERT as the joint transformer, '
       f'trained {t["steps"]} steps on video-text matching ({t["videos_per_batch"]} videos a '
       'batch, one negative caption each) with LSE consensus over the clips. The baseline '
       'is the same cross-encoder, trained the same way, on frozen S3D features (random '
       'weights, as the other demos read them) of the same sampled times instead of pixels: '
       'one visual token a clip. Each run\'s checkpoint was chosen by dev R@1; dev and test '
       'videos are new instances, narrated in phrasings no training video uses.</p>'
       + report.table(['split', 'videos'], [[k, v] for k, v in metrics['corpus'].items()])),
      (f'Held-out test ({metrics["num_test_queries"]} narrated steps)', report.table(
          ['', 'step', 'R@1', 'R@5', 'R@10', 'median rank', 'multiple choice'], rows)
       + f'<p>Retrieval: each step\'s sentence against its own clip and '
       f'{metrics["candidates"] - 1} other steps\' clips of the split, every pair through the '
       'cross-encoder (other steps of the same verb and noun count as misses); multiple '
       f'choice: the sentence among {metrics["multiple_choice_options"] - 1} of other '
       'verb-noun pairs. [95% bootstrap interval over the queries]</p>'),
      ('Sampled clips', report.image('test_clips.png', 'test steps and the first-ranked '
                                     'sentence')),
      ('Dev R@1 by checkpoint', report.table(['run', 'step', 'R@1'], dev_rows)),
      ('Training curves', curves),
      ('Stages', report.table(['stage', 'seconds', 'peak RSS so far (GiB)'],
                              [[k, v['seconds'], v['peak_rss_gib_so_far']]
                               for k, v in metrics['stages'].items()])),
  ]
  return report.write(report_dir, 'vlm_jax demo: ClipBERT on rendered videos', sections,
                      metrics)
