"""The ClipBERT trainer: sparse clips decoded from video files, on the one loop.

  vlm-jax train --config configs/clipbert.py:tiny --workdir runs/clipbert \\
      --config.data.train_jsonl=pairs.jsonl --config.data.video_dir=videos/

Items come from one of the config's sources (`checks.data_source`), read by
vlm_jax.clipbert.data; entries whose video file is not in the folder are left
out and listed in manifest.json (`missing_videos`). Before anything is built,
the videos are probed in order until one opens (a list with no readable video
is one error line). The batch of step s depends only on (seed, s)
(`data.BatchBuilder`), so a resumed run rebuilds the batches a straight one
would, with no data state to save. A video that cannot be decoded, or is too
short, is replaced in its row by the next item and reported in manifest.json
(`videos_skipped`: video, reason, first step, rows replaced), so a corrupt file
costs its rows, never the run. The step is vlm_jax.clipbert.step's; with
config.model.init_checkpoint the parameters start from ClipBERT's checkpoint
(vlm_jax.convert.clipbert_torch). Items whose file is an image are 1-frame
videos; with loss.mlm_weight > 0 the batches also carry each positive caption
masked for the MLM term (image-text pretraining: configs/clipbert.py's
`pretrain` option). With model.feature_dim > 0 the frames are clip features
of data.feature_dir (vlm_jax.clipbert.clip_features), standardised by the
training videos' statistics, saved as WORKDIR/feature_stats.npz.

Open-ended QA's answer classes (the model.num_answers most frequent training
answers) are written to WORKDIR/answers.json, which inference reads.
"""

import json
import os

import jax
import tensorflow as tf

from vlm_jax.clipbert import checks
from vlm_jax.clipbert import clip_features
from vlm_jax.clipbert import data as data_lib
from vlm_jax.clipbert import model as clipbert_model
from vlm_jax.clipbert import step as step_lib
from vlm_jax.data import feature_stats
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.train import loop, report

def read_items(config) -> tuple[data_lib.ItemList, str]:
  """The training items of the config's source, and that source's path."""
  field = checks.data_source(config)
  d = config.data
  path = d[field]
  if not os.path.isfile(path):  # the readers read local files
    raise FileNotFoundError(f'config.data.{field}: no such file {path!r}')
  if field == 'train_jsonl':
    return data_lib.read_items(path, d.video_dir or None), path
  if field == 'train_msrvtt_csv':
    return data_lib.read_msrvtt_retrieval(path, d.video_dir), path
  return data_lib.read_youcook2(path, d.video_dir, d.youcook2_subset), path


def batch_options(config, answers: tuple[str, ...] = (), mask_id: int = -1
                  ) -> data_lib.BatchOptions:
  """How a config's batches are cut: its clips, frames, text length and decoding pool.

  With the MLM term (loss.mlm_weight > 0) also the captions' masking:
  data.text_mask_rate, `mask_id` ([MASK] in the run's vocab) and the word
  table's rows (the bound of the random replacements).
  """
  d = config.data
  mlm = {}
  if step_lib.mlm_weight(config) > 0:
    mlm = dict(text_mask_rate=d.text_mask_rate, mask_id=mask_id,
               vocab_size=step_lib.model_config(config).bert_config.vocab_size)
  return data_lib.BatchOptions(
      num_clips=d.num_clips, num_frames=d.num_frames, fps=d.fps, longest_side=d.image_size,
      max_text_len=d.max_text_tokens, normalization=d.normalization,
      min_duration=d.min_duration, workers=d.workers, pool=d.pool, answers=tuple(answers),
      **mlm)


def feature_frames(config, workdir: str, videos=None) -> clip_features.FeatureFrames | None:
  """The run's clip features (model.feature_dim > 0; else None), standardised by the
  workdir's statistics (data.standardize_features). Training passes its `videos`: their
  statistics are computed and saved on the first run; inference reads them.
  """
  if not step_lib.feature_dim(config):
    return None
  d = config.data
  frames = clip_features.FeatureFrames(d.feature_dir, step_lib.feature_dim(config))
  if d.standardize_features:
    frames.stats = feature_stats.load(workdir)
    if frames.stats is None:
      if videos is None:
        raise FileNotFoundError(f'{workdir}: a run on standardised features keeps their '
                                f'statistics in {feature_stats.STATS_FILE}, which is missing')
      frames.stats = frames.corpus_stats(videos)
      if jax.process_index() == 0:
        feature_stats.save(workdir, frames.stats)
  return frames


def tokenizer(config):
  """The config's WordPiece tokenizer: data.vocab_file, the text checkpoint's or bert-base-uncased's."""
  return tokenizer_lib.load(tokenizer_lib.resolve_vocab_file(
      config.data.vocab_file, step_lib.text_checkpoint(config)))


def _skipped(skips, through_step: int) -> list[dict]:
  """Skips of steps <= through_step grouped by video: [{video, reason, first_step, rows}]."""
  by_video: dict[str, dict] = {}
  for s in skips:
    if s.step > through_step:
      continue  # built ahead by tf.data's prefetch, not trained on
    entry = by_video.setdefault(s.video, dict(video=s.video, reason=s.reason,
                                              first_step=s.step, rows=0))
    entry['first_step'] = min(entry['first_step'], s.step)
    entry['rows'] += 1
  return sorted(by_video.values(), key=lambda e: (e['first_step'], e['video']))


def _merge_skipped(earlier: list[dict], later: list[dict]) -> list[dict]:
  by_video = {e['video']: dict(e) for e in earlier}
  for e in later:
    if e['video'] in by_video:
      by_video[e['video']]['rows'] += e['rows']
    else:
      by_video[e['video']] = dict(e)
  return sorted(by_video.values(), key=lambda e: (e['first_step'], e['video']))


def make_run(config, workdir: str, found: data_lib.ItemList, source: str,
             builder: data_lib.BatchBuilder) -> loop.Run:
  """The loop's view of a ClipBERT run over `found` (read from `source`)."""
  setup = step_lib.build(config)
  t = config.train
  manifest = {
      'system': 'clipbert', 'items_file': source, 'task': config.model.task,
      'items': len(found.items), 'videos': len({i.video for i in found.items}),
      'missing_videos': [dict(source=s, video=v) for s, v in found.missing],
      'videos_skipped': [],
  }

  def create_state():
    if config.model.init_checkpoint:
      loop.say(f'parameters from {config.model.init_checkpoint}')
    return setup.sharded.create_state(step_lib.initial_params(setup))

  def batches(state, start):
    """Host batches of steps start + 1, ...; skips of the steps trained go to the manifest."""
    del state  # the batches depend on (seed, step) alone
    previous = report.read_json(os.path.join(workdir, 'manifest.json')) if start else {}
    # A resumed run keeps the skips of the steps before it (and not of steps it redoes).
    earlier = [e for e in previous.get('videos_skipped', []) if e['first_step'] <= start]
    dataset = data_lib.make_dataset(builder, t.global_batch_size, start, t.num_steps,
                                    jax.process_index(), jax.process_count())
    for step, host_batch in enumerate(dataset.as_numpy_iterator(), start + 1):
      manifest['videos_skipped'] = _merge_skipped(earlier, _skipped(list(builder.skipped), step))
      batch = {'input_ids': host_batch['input_ids'], 'attention_mask': host_batch['text_mask'],
               'frames': host_batch['frames'], 'labels': host_batch['labels']}
      # The masked captions, when the MLM term is on (BatchOptions.text_mask_rate > 0).
      batch.update({name: host_batch[name] for name in data_lib.MLM_NAMES if name in host_batch})
      yield batch

  return loop.Run(
      mesh=setup.mesh, abstract_state=setup.sharded.abstract_state, create_state=create_state,
      train_step=setup.train_step, num_steps=t.num_steps, batches=batches,
      examples_per_step=t.global_batch_size, manifest=manifest, name='train clipbert')


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains for config.train.num_steps (or until step `stop_at`); returns the last metrics."""
  checks.validate(config, jax.device_count(), jax.process_count())
  found, source = read_items(config)
  checks.items(config, found.items, source)
  vocab = tokenizer(config)
  checks.vocabulary(config, vocab.get_vocab_size(), config.data.vocab_file or 'the default vocab',
                    step_lib.model_config(config).bert_config.vocab_size)
  checks.readable_video(found.items, source)
  answers = ()
  if config.model.task == clipbert_model.QA:
    answers = data_lib.answer_vocabulary(found.items, config.model.num_answers)
  workdir = loop.make_workdir(workdir)
  if answers and jax.process_index() == 0:
    # Through gfile: the workdir may be gs://.
    with tf.io.gfile.GFile(os.path.join(workdir, data_lib.ANSWERS_FILE), 'w') as f:
      f.write(json.dumps(list(answers)))
  d = config.data
  loop.say(f'{len(found.items)} {config.model.task} items of '
           f'{len({i.video for i in found.items})} videos from {source} '
           f'({len(found.missing)} without a video file left out); '
           f'{config.train.num_steps} steps of {config.train.global_batch_size} videos x '
           f'{d.num_clips} clips x {d.num_frames} frames '
           + (f'of clip features from {d.feature_dir}' if step_lib.feature_dim(config)
              else f'at {d.image_size} px')
           + (f'; MLM on the captions (weight {step_lib.mlm_weight(config)}, '
              f'{d.text_mask_rate:.0%} masked)' if step_lib.mlm_weight(config) > 0 else ''))
  options = batch_options(config, answers, tokenizer_lib.special_ids(vocab)['[MASK]'])
  features = feature_frames(config, workdir, [i.video for i in found.items])
  builder = data_lib.BatchBuilder(found.items, vocab, options, config.seed, features)
  try:
    run = make_run(config, workdir, found, source, builder)
    metrics = loop.train(config, workdir, run, stop_at=stop_at)
  finally:
    builder.close()
  skipped = run.manifest['videos_skipped']
  if skipped:
    loop.say(f'{len(skipped)} videos could not be used and were skipped (their rows took the '
             f'next item): {", ".join(e["video"] for e in skipped[:3])}'
             f'{" ..." if len(skipped) > 3 else ""}; manifest.json lists why')
  return metrics
