"""Joining clip features, a codebook and transcripts into VideoBERT records.

Pure functions (no flags, no files written) behind `vlm-jax make-records`:
per video, the visual tokens are the codebook leaves of its clip features
(`codebook.assign`: tree descent, ids 0..K-1, as `records.VideoRecord` and
the pipeline expect; the joint-vocabulary offset is added in the pipeline),
the clip times come from extract-features' `<video_id>.times.npy`, and the
sentences are the video's timed transcript sentences as BERT WordPieces.

A video without a transcript gives a video-only record (empty text lists),
which the pipeline turns into video-only examples; a sentence with no
WordPieces (only characters the vocabulary drops) is left out, since an empty
sentence cannot be masked or segmented.
"""

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np
import tokenizers

from vlm_jax.data import records
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data.transcripts import TimedSentence
from vlm_jax.videobert import codebook as codebook_lib


@dataclasses.dataclass
class JoinStats:
  """Counts for one record: clips, sentences kept, sentences dropped as empty."""
  clips: int = 0
  sentences: int = 0
  empty_sentences: int = 0


def check_clip_times(times: np.ndarray, num_clips: int) -> np.ndarray:
  """Validates `[num_clips, 2]` (start, end) seconds; returns them as float64.

  Raises:
    ValueError: wrong shape, non-finite, or end < start.
  """
  times = np.asarray(times)
  if times.shape != (num_clips, 2):
    raise ValueError(f'clip times {times.shape} do not match {num_clips} clips (expected '
                     f'[{num_clips}, 2])')
  times = times.astype(np.float64)
  if not np.isfinite(times).all():
    raise ValueError('clip times are not finite')
  if (times[:, 1] < times[:, 0]).any():
    raise ValueError('a clip ends before it starts')
  return times


def tokenize_sentences(tokenizer: tokenizers.Tokenizer, sentences: Sequence[TimedSentence]
                       ) -> tuple[list[list[int]], list[tuple[float, float]], int]:
  """Time-ordered WordPiece ids and (start, end) of the non-empty sentences.

  Returns:
    (ids per sentence, times per sentence, number of sentences dropped because
    they have no WordPiece).
  """
  # Sorted by time, because the pipeline joins a sentence with its next ones.
  ordered = sorted(sentences, key=lambda s: (s.start, s.end))
  ids = tokenizer_lib.wordpieces(tokenizer, [s.text for s in ordered]) if ordered else []
  kept_ids, kept_times = [], []
  for sentence, pieces in zip(ordered, ids):
    if pieces:
      kept_ids.append(list(pieces))
      kept_times.append((float(sentence.start), float(sentence.end)))
  return kept_ids, kept_times, len(ordered) - len(kept_ids)


def video_record(video_id: str, features: np.ndarray, clip_times: np.ndarray,
                 book: codebook_lib.Codebook, sentences: Optional[Sequence[TimedSentence]],
                 tokenizer: tokenizers.Tokenizer) -> tuple[records.VideoRecord, JoinStats]:
  """One video's record.

  Args:
    video_id: the id written to the record.
    features: [num_clips, D] clip features (D = the codebook's).
    clip_times: [num_clips, 2] clip (start, end) seconds.
    book: the visual-token codebook.
    sentences: the video's timed sentences, or None (no transcript: a
      video-only record).
    tokenizer: BERT WordPiece tokenizer.

  Returns:
    (the record, its counts).

  Raises:
    ValueError: features or times that do not fit.
  """
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[1] != book.dim:
    raise ValueError(f'features {features.shape} do not fit the codebook (D = {book.dim})')
  times = check_clip_times(clip_times, features.shape[0])
  tokens = codebook_lib.assign(book, features)
  ids, sentence_times, empty = tokenize_sentences(tokenizer, sentences or [])
  record = records.VideoRecord(
      video_id=video_id, sentences=ids, sentence_times=sentence_times,
      visual_tokens=[int(t) for t in tokens],
      clip_times=[(float(a), float(b)) for a, b in times])
  record.validate()
  return record, JoinStats(clips=len(tokens), sentences=len(ids), empty_sentences=empty)


def match(video_ids: Sequence[str], transcripts: Mapping[str, Sequence[TimedSentence]]
          ) -> tuple[list[str], list[str], list[str]]:
  """(ids with a transcript, ids without one, transcript ids with no features), sorted."""
  ids = set(video_ids)
  with_text = sorted(i for i in ids if i in transcripts)
  without_text = sorted(i for i in ids if i not in transcripts)
  orphans = sorted(i for i in transcripts if i not in ids)
  return with_text, without_text, orphans
