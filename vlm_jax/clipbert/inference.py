"""A trained ClipBERT, loaded from a `vlm-jax train` workdir: cross-encoder scores from video files.

Inference clips are ClipBERT's: data.eval_clips clips uniform over the video
(or over an item's span), one at a third of it when eval_clips = 1
(`sampling.inference_timestamps`), decoded by `frames.decode_at` at
data.image_size and normalised as in training (a run on clip features reads
their rows at the same times). The clips' logits are reduced
by the training consensus (model.consensus), as ClipBERT's inference does.

A cross-encoder reads text and video together, so every (text, video) pair
goes through the joint transformer. The frame encoder does not depend on the
text, though: `encode_videos` runs it once per clip of each video and keeps
the visual tokens [clips, V, hidden] on the host; every text block reuses
them (`score_matrix` goes block by block with
vlm_jax.evaluate.cross_retrieval.score_matrix, videos the outer loop). For
MSR-VTT 1k-A at 448 px that is 1,000 frame-encoder passes per clip instead of
10^6, and 1,000 x 1 x 49 x 768 float32 tokens (150 MB) to hold.

Scores: retrieval and MSR-VTT multiple choice with a 'matching' model use the
match probability (softmax of the reduced logits, index 1, ClipBERT's
`inference_retrieval`); a 'multiple_choice' model gives one reduced score per
option; a 'qa' model's reduced logits pick an answer of WORKDIR/answers.json (data.ANSWERS_FILE).
`evaluate_*` run the three evaluation binaries (`vlm-jax eval cross-retrieval
| multiple-choice | open-qa`): a video that cannot be decoded is reported and
its items skipped; no decodable video at all is an error.
"""

import concurrent.futures
import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
import tqdm

from vlm_jax.clipbert import clip_features
from vlm_jax.clipbert import consensus
from vlm_jax.clipbert import data as data_lib
from vlm_jax.clipbert import model as clipbert_model
from vlm_jax.clipbert import objectives
from vlm_jax.clipbert import sampling
from vlm_jax.clipbert import step as step_lib
from vlm_jax.clipbert import trainer
from vlm_jax.data import files as files_lib
from vlm_jax.data import frames as frames_lib
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data.files import DataError
from vlm_jax.evaluate import cross_retrieval
from vlm_jax.train import checkpoints, report

@dataclasses.dataclass
class Loaded:
  """A ClipBERT run on one device: config, model, parameters, tokenizer, QA answer classes."""
  config: ml_collections.ConfigDict
  model: clipbert_model.ClipBert
  params: Any
  step: int
  tokenizer: Any
  answers: tuple[str, ...] = ()
  # A run on clip features (model.feature_dim > 0) reads them instead of frames.
  features: clip_features.FeatureFrames | None = None

  @property
  def task(self) -> str:
    return str(self.config.model.task)


def load(workdir: str, step: int | None = None) -> Loaded:
  """The config, model and parameters of a ClipBERT run (latest checkpoint by default)."""
  config = report.read_inference_config(workdir, 'clipbert', 'ClipBERT')
  setup = step_lib.build(config, devices=jax.devices()[:1])
  params, step = checkpoints.restore_params(workdir, setup.sharded.abstract_state.params, step)
  vocab = trainer.tokenizer(config)
  answers = ()
  if config.model.task == clipbert_model.QA:
    path = os.path.join(workdir, data_lib.ANSWERS_FILE)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f'{path}: a qa run keeps its answer classes there')
    with tf.io.gfile.GFile(path) as f:
      answers = tuple(json.load(f))
  return Loaded(config, setup.model, params, step, vocab, answers,
                trainer.feature_frames(config, workdir))


# --- videos -> visual tokens ---------------------------------------------------


def clip_times(loaded: Loaded, path: str, span: tuple[float, float] | None = None
               ) -> np.ndarray:
  """[eval_clips, num_frames] seconds of the inference clips' frames in the video.

  Raises:
    DataError: the video cannot be probed, or the span lies past its end (named).
  """
  d = loaded.config.data
  duration, fps = frames_lib.probe(path)
  start, end = span if span else (0.0, duration)
  end = min(end, duration)
  if end <= start:
    raise DataError(f'{path}: the span {span} lies past the end ({duration:.3f} s)')
  return sampling.inference_timestamps(end - start, fps, num_clips=d.eval_clips,
                                       num_frames=d.num_frames, fps=d.fps) + start


def clip_frames(loaded: Loaded, path: str, span: tuple[float, float] | None = None
                ) -> np.ndarray:
  """[eval_clips, num_frames, S, S, 3] float32 normalised frames of the inference clips
  (a run on clip features: their rows [eval_clips, num_frames, 1, 1, D]).

  Raises:
    DataError: the video cannot be probed or decoded (named), or has no features.
  """
  d = loaded.config.data
  if loaded.features is not None:
    return loaded.features.at(path, clip_times(loaded, path, span))
  pixels = frames_lib.decode_at(path, clip_times(loaded, path, span), d.image_size)
  return data_lib.normalize(pixels, d.normalization)


@dataclasses.dataclass
class VideoTokens:
  """The visual tokens of the videos that decoded.

  Attributes:
    tokens: [n_ok, clips, V, hidden] float32.
    index: [n_ok] each row's position in the videos asked for.
    failures: (video, why) of those that did not decode, in order.
  """
  tokens: np.ndarray
  index: np.ndarray
  failures: list[tuple[str, str]]


def _visual_fn(loaded: Loaded):
  return jax.jit(lambda p, f: loaded.model.apply({'params': p}, f, method='visual_tokens'))


def encode_videos(loaded: Loaded, videos: Sequence[str | tuple[str, Any]], batch_size: int = 8,
                  progress: bool = False) -> VideoTokens:
  """Each video's inference clips through the frame encoder, once (the module docstring).

  Args:
    loaded: the run.
    videos: paths, or (path, span or None) pairs.
    batch_size: videos per frame-encoder call (fixed shape: the last call is padded).
    progress: a progress bar over the batches.
  """
  refs = [(v, None) if isinstance(v, str) else (v[0], v[1]) for v in videos]
  visual = _visual_fn(loaded)
  tokens, index, failures = [], [], []
  pool = concurrent.futures.ThreadPoolExecutor(int(loaded.config.data.workers))

  def decode(ref):
    try:
      return clip_frames(loaded, *ref), None
    except DataError as e:
      return None, str(e)

  try:
    starts = range(0, len(refs), batch_size)
    for start in tqdm.tqdm(starts, desc='visual tokens', unit='batch', disable=not progress,
                           leave=False):
      chunk = refs[start:start + batch_size]
      decoded = []
      for offset, (pixels, error) in enumerate(pool.map(decode, chunk)):
        if pixels is None:
          failures.append((chunk[offset][0], error))
        else:
          decoded.append(pixels)
          index.append(start + offset)
      if not decoded:
        continue
      real = len(decoded)
      decoded += [decoded[-1]] * (batch_size - real)  # one compiled shape
      tokens.append(np.asarray(visual(loaded.params, np.stack(decoded)))[:real])
  finally:
    pool.shutdown()
  if not tokens:
    raise DataError(f'none of the {len(refs)} videos could be decoded (the first: '
                    f'{failures[0][1] if failures else "no videos"})')
  return VideoTokens(np.concatenate(tokens), np.asarray(index, np.int64), failures)


# --- texts x visual tokens -> logits --------------------------------------------


def text_inputs(loaded: Loaded, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """`[CLS] text [SEP]` ids and mask [n, data.max_text_tokens], as training frames them."""
  return tokenizer_lib.sentence_inputs(loaded.tokenizer, list(texts),
                                       int(loaded.config.data.max_text_tokens) - 2)


def _aligned_logits(loaded: Loaded):
  """jit (params, ids [b, T, L], mask [b, T, L], visual [b, clips, V, H]) -> [b, clips, T, out].

  The part of ClipBert.__call__ after `visual_tokens` (the model has no
  method for it alone): each of a video's T texts against each of its clips.
  """
  def head(module, ids, mask, visual):
    batch, clips, num_visual, hidden = visual.shape
    texts, length = ids.shape[1:]
    per_pair = lambda x: jnp.broadcast_to(x[:, None], (batch, clips, texts, length)).reshape(
        -1, length)
    visual = jnp.broadcast_to(visual[:, :, None], (batch, clips, texts, num_visual, hidden))
    _, pooled = module.encode(per_pair(ids), per_pair(mask),
                              visual.reshape(-1, num_visual, hidden))
    logits = module.classifier(pooled)
    return logits.reshape(batch, clips, texts, -1)

  return jax.jit(lambda p, i, m, v: loaded.model.apply({'params': p}, i, m, v, method=head))


def _tokens_of(loaded: Loaded, videos) -> np.ndarray:
  if isinstance(videos, VideoTokens):
    return videos.tokens
  if isinstance(videos, np.ndarray):
    return videos
  encoded = encode_videos(loaded, videos)
  if encoded.failures:
    raise DataError(f'{len(encoded.failures)} videos could not be decoded: '
                    f'{encoded.failures[0][1]}')
  return encoded.tokens


def score_matrix(loaded: Loaded, texts: Sequence[str], videos, block: tuple[int, int] = (32, 8),
                 progress: bool = False) -> np.ndarray:
  """[num_texts, num_videos] match probabilities of every text against every video.

  Args:
    loaded: a 'matching' run.
    texts: the captions.
    videos: `encode_videos`' result, its tokens [n, clips, V, hidden], or video
      paths (encoded here; a video that does not decode is an error).
    block: (texts, videos) pairs per forward pass; a videos block's visual
      tokens serve all text blocks.
    progress: a progress bar over video blocks.
  """
  if loaded.task != clipbert_model.MATCHING:
    raise ValueError(f"retrieval scores need a 'matching' run, this one is {loaded.task!r}")
  tokens = _tokens_of(loaded, videos)
  ids, mask = text_inputs(loaded, texts)
  logits_fn = _aligned_logits(loaded)
  method = loaded.config.model.consensus
  bar = tqdm.tqdm(total=-(-len(tokens) // block[1]) * -(-len(texts) // block[0]),
                  desc='pair scores', unit='block', disable=not progress, leave=False)

  def score(text_index, video_index):
    # Each video of the block against every text of the block: [videos, texts, L].
    shape = (len(video_index),) + ids[text_index].shape
    logits = logits_fn(loaded.params, np.broadcast_to(ids[text_index], shape),
                       np.broadcast_to(mask[text_index], shape), tokens[video_index])
    bar.update(1)
    return np.asarray(objectives.match_scores(logits, method)).T

  try:
    return cross_retrieval.score_matrix(score, len(texts), len(tokens), block)
  finally:
    bar.close()


def pair_scores(loaded: Loaded, texts: Sequence[str], tokens: np.ndarray,
                batch_size: int = 32) -> np.ndarray:
  """[n] match probabilities of text i against video i; tokens [n, clips, V, H] the videos'.

  For a chosen set of pairs (a query against its candidates) rather than every
  text against every video (`score_matrix`).
  """
  if loaded.task != clipbert_model.MATCHING:
    raise ValueError(f"match scores need a 'matching' run, this one is {loaded.task!r}")
  reduced = _per_item(loaded, [[t] for t in texts], tokens, batch_size)  # [n, 1, 2]
  return np.asarray(jax.nn.softmax(reduced[:, 0], axis=-1)[:, 1])


def _per_item(loaded: Loaded, texts_per_item: Sequence[Sequence[str]], tokens: np.ndarray,
              batch_size: int) -> np.ndarray:
  """Consensus-reduced logits [n, T, outputs] of each item's T texts against its own video."""
  count = len(texts_per_item[0])
  ids, mask = text_inputs(loaded, [t for texts in texts_per_item for t in texts])
  ids, mask = ids.reshape(len(texts_per_item), count, -1), mask.reshape(len(texts_per_item),
                                                                        count, -1)
  logits_fn = _aligned_logits(loaded)
  method = loaded.config.model.consensus
  out = []
  for start in range(0, len(ids), batch_size):
    rows = np.minimum(np.arange(start, start + batch_size), len(ids) - 1)
    logits = logits_fn(loaded.params, ids[rows], mask[rows], tokens[rows])
    out.append(np.asarray(consensus.reduce(logits, method))[:min(batch_size, len(ids) - start)])
  return np.concatenate(out)


def multiple_choice_scores(loaded: Loaded, items: Sequence[data_lib.Item], tokens: np.ndarray,
                           batch_size: int = 8) -> np.ndarray:
  """[n, options] option scores of multiple-choice items, tokens [n, clips, V, H] their videos'.

  A 'matching' run scores each "question option" text as a caption (its match
  probability: ClipBERT's MSRVTT-MC); a 'multiple_choice' run gives its
  reduced option scores.
  """
  if loaded.task not in (clipbert_model.MATCHING, clipbert_model.MULTIPLE_CHOICE):
    raise ValueError(f"option scores need a 'matching' or 'multiple_choice' run, this one is "
                     f'{loaded.task!r}')
  texts = [[data_lib.option_text(i.text, o) for o in i.options] for i in items]
  reduced = _per_item(loaded, texts, tokens, batch_size)  # [n, options, outputs]
  if loaded.task == clipbert_model.MATCHING:
    return np.asarray(jax.nn.softmax(reduced, axis=-1)[..., 1])
  return reduced[..., 0]


def answer_logits(loaded: Loaded, questions: Sequence[str], tokens: np.ndarray,
                  batch_size: int = 8) -> np.ndarray:
  """[n, num_answers] reduced logits of a 'qa' run; tokens [n, clips, V, H] the videos'."""
  if loaded.task != clipbert_model.QA:
    raise ValueError(f"open-ended answers need a 'qa' run, this one is {loaded.task!r}")
  return _per_item(loaded, [[q] for q in questions], tokens, batch_size)[:, 0]


# --- the evaluation binaries ----------------------------------------------------


def read_eval_items(path: str, video_folder: str, kind: str) -> data_lib.ItemList:
  """Items of `kind` from an evaluation file (`data.read_items`), checked to be of it."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--items: no such file {path!r}')
  found = data_lib.read_items(path, video_folder)
  if not found.items:
    raise DataError(f'{path}: no item whose video is in {video_folder} '
                    f'({len(found.missing)} missing)')
  if found.items[0].kind != kind:
    raise DataError(f'{path}: {found.items[0].kind} items, this evaluation reads {kind} items')
  return found


def _header(loaded: Loaded, workdir: str, items_path: str, found: data_lib.ItemList,
            tokens: VideoTokens, refs: list) -> dict:
  return {
      'workdir': workdir, 'step': loaded.step, 'task': loaded.task, 'items_file': items_path,
      'items': len(found.items),
      'missing_videos': [dict(source=s, video=v) for s, v in found.missing],
      'failed_videos': [dict(video=v, reason=r) for v, r in tokens.failures],
      'videos': len(refs), 'videos_decoded': len(tokens.index),
      'eval_clips': int(loaded.config.data.eval_clips),
  }


def _video_refs(items: Sequence[data_lib.Item]) -> tuple[list, np.ndarray]:
  """Distinct (video, span) of the items, and each item's index into them."""
  refs, position, owner = [], {}, []
  for item in items:
    key = (item.video, item.span)
    if key not in position:
      position[key] = len(refs)
      refs.append(key)
    owner.append(position[key])
  return refs, np.asarray(owner, np.int64)


def _decoded_items(items, owner, tokens: VideoTokens):
  """The items whose video decoded, and each one's row of tokens.tokens."""
  row_of = {int(v): r for r, v in enumerate(tokens.index)}
  keep = [i for i, v in enumerate(owner) if int(v) in row_of]
  return keep, np.asarray([row_of[int(owner[i])] for i in keep], np.int64)


def evaluate_retrieval(workdir: str, items_path: str, video_folder: str,
                       block: tuple[int, int] = (32, 8), ties: str = 'pessimistic',
                       progress: bool = True) -> tuple[dict, np.ndarray]:
  """R@1/5/10, median and mean rank both ways of a 'matching' run; also the score matrix.

  Captions of a video that fails to decode are skipped (listed); the gallery
  is every decoded video. Returns (metrics, scores [captions kept, videos decoded]).
  """
  found = read_eval_items(items_path, video_folder, data_lib.MATCHING)
  loaded = load(workdir)
  refs, owner = _video_refs(found.items)
  tokens = encode_videos(loaded, refs, progress=progress)
  keep, rows = _decoded_items(found.items, owner, tokens)
  texts = [found.items[i].text for i in keep]
  scores = score_matrix(loaded, texts, tokens, block, progress=progress)
  result = _header(loaded, workdir, items_path, found, tokens, refs)
  result.update({'texts': len(texts), 'skipped_texts': len(found.items) - len(keep),
                 'chance_R@1': 1.0 / len(tokens.index), 'ties': ties},
                **cross_retrieval.retrieval_metrics(scores, rows, ties))
  return result, scores


def evaluate_multiple_choice(workdir: str, items_path: str, video_folder: str,
                             progress: bool = True) -> dict:
  """Multiple-choice accuracy (with its interval and chance) of a matching or MC run."""
  found = read_eval_items(items_path, video_folder, data_lib.MULTIPLE_CHOICE)
  loaded = load(workdir)
  counts = sorted({len(i.options) for i in found.items})
  if len(counts) != 1:
    raise DataError(f'{items_path}: questions with different numbers of options {counts}')
  refs, owner = _video_refs(found.items)
  tokens = encode_videos(loaded, refs, progress=progress)
  keep, rows = _decoded_items(found.items, owner, tokens)
  items = [found.items[i] for i in keep]
  scores = multiple_choice_scores(loaded, items, tokens.tokens[rows])
  result = _header(loaded, workdir, items_path, found, tokens, refs)
  result.update(skipped_questions=len(found.items) - len(keep),
                **cross_retrieval.multiple_choice_accuracy(
                    scores, np.asarray([i.answer for i in items])))
  return result


def evaluate_open_qa(workdir: str, items_path: str, video_folder: str,
                     progress: bool = True) -> dict:
  """Exact-match accuracy of a 'qa' run's answers; answers outside its classes count wrong."""
  found = read_eval_items(items_path, video_folder, data_lib.QA)
  loaded = load(workdir)
  refs, owner = _video_refs(found.items)
  tokens = encode_videos(loaded, refs, progress=progress)
  keep, rows = _decoded_items(found.items, owner, tokens)
  items = [found.items[i] for i in keep]
  logits = answer_logits(loaded, [i.text for i in items], tokens.tokens[rows])
  predictions = cross_retrieval.predicted_answers(logits, loaded.answers)
  answers = [str(i.answer) for i in items]
  result = _header(loaded, workdir, items_path, found, tokens, refs)
  result.update(skipped_questions=len(found.items) - len(keep),
                answers_outside_classes=sum(a not in set(loaded.answers) for a in answers),
                **cross_retrieval.open_ended_accuracy(predictions, answers))
  result['predictions'] = [dict(source=i.source, answer=a, predicted=p)
                           for i, a, p in zip(items, answers, predictions)]
  return result


def write_metrics(result: dict, output: str) -> None:
  """The metrics JSON, atomically, its folder made."""
  folder = os.path.dirname(os.path.abspath(output))
  os.makedirs(folder, exist_ok=True)
  files_lib.write_json(output, result)


def _skips(result: dict) -> str:
  failed, missing = len(result['failed_videos']), len(result['missing_videos'])
  return (f'{result["videos_decoded"]} of {result["videos"]} videos decoded'
          + (f', {failed} failed' if failed else '')
          + (f', {missing} items without a video file' if missing else ''))


def retrieval_summary(result: dict, output: str) -> str:
  """Lines for the console: both directions' R@1/5/10, MdR, MnR, and what was skipped."""
  lines = [f'ClipBERT step {result["step"]}: {result["texts"]} captions x '
           f'{result["videos_decoded"]} videos ({_skips(result)}); chance R@1 '
           f'{result["chance_R@1"]:.3f}']
  for direction in ('text_to_video', 'video_to_text'):
    m = result[direction]
    lines.append(f'  {direction}: R@1 {m["R@1"]:.3f}  R@5 {m["R@5"]:.3f}  R@10 {m["R@10"]:.3f}  '
                 f'MdR {m["median_rank"]}  MnR {m["mean_rank"]:.1f}  ({m["count"]} queries)')
  lines.append(f'wrote {output}')
  return '\n'.join(lines)


def accuracy_summary(result: dict, output: str) -> str:
  """One line of accuracy (interval, chance where known) and what was skipped, then the file."""
  interval = result.get('accuracy_ci95')
  shown = f' (95% CI {interval[0]:.3f}-{interval[1]:.3f})' if interval else ''
  chance = f', chance {result["chance"]:.3f}' if 'chance' in result else ''
  return (f'ClipBERT step {result["step"]}: accuracy {result["accuracy"]:.3f}{shown} over '
          f'{result["count"]} questions{chance}; {_skips(result)}\nwrote {output}')


def run_accuracy_binary(command: str, evaluate, workdir: str, items: str, videos: str,
                        output: str) -> None:
  """An accuracy binary's whole run: `evaluate` (evaluate_multiple_choice or
  evaluate_open_qa), the metrics JSON, the console summary; a bad input exits with
  one line naming `command`."""
  try:
    result = evaluate(workdir, items, videos)
    write_metrics(result, output)
  except (ValueError, OSError, KeyError, DataError) as e:
    raise SystemExit(f'vlm-jax eval {command}: {e}') from e
  print(accuracy_summary(result, output))
