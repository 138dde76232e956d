"""VideoBERT losses against a hand computation."""

import numpy as np

from vlm_jax.videobert import objectives, pipeline

VISUAL_OFFSET = 6  # 5 WordPieces + [>], then 3 visual tokens


def log_softmax(x):
  x = x - x.max()
  return x - np.log(np.exp(x).sum())


def test_loss_matches_hand_computation():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 9)).astype(np.float32)
  batch = {
      'masked_ids': np.array([[2, 4], [7, 0], [8, 3]], np.int32),
      'masked_weights': np.array([[1, 1], [1, 0], [1, 1]], np.float32),
      'regime': np.array([pipeline.TEXT, pipeline.VIDEO, pipeline.VIDEO_TEXT], np.int32),
      'alignment_label': np.array([1, 1, 0], np.int32),
  }
  alignment_logits = rng.normal(size=(3, 2)).astype(np.float32)
  outputs = {'mlm_logits': logits, 'alignment_logits': alignment_logits}
  weights = dict(text_mlm=1.0, video_mlm=2.0, video_text_mlm=0.5, alignment=3.0)
  loss, metrics = objectives.videobert_loss(
      outputs, batch, weights, objectives.normalizers(batch), VISUAL_OFFSET)

  def ce(row, target):  # softmax over the target's modality only
    classes = slice(VISUAL_OFFSET, None) if target >= VISUAL_OFFSET else slice(0, VISUAL_OFFSET)
    offset = VISUAL_OFFSET if target >= VISUAL_OFFSET else 0
    return -log_softmax(row[classes])[target - offset]

  text = (ce(logits[0, 0], 2) + ce(logits[0, 1], 4)) / 2
  video = ce(logits[1, 0], 7) / 1  # the second slot is padding
  video_text = (ce(logits[2, 0], 8) + ce(logits[2, 1], 3)) / 2
  alignment = -log_softmax(alignment_logits[2])[0] / 1  # only the video-text example
  np.testing.assert_allclose(metrics['loss_text_mlm'], text, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss_video_mlm'], video, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss_video_text_mlm'], video_text, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss_alignment'], alignment, rtol=1e-5)
  np.testing.assert_allclose(loss, text + 2 * video + 0.5 * video_text + 3 * alignment,
                             rtol=1e-5)


def test_one_softmax_over_the_joint_vocabulary_as_the_paper():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 2, 9)).astype(np.float32)
  batch = {
      'masked_ids': np.array([[2, 7], [8, 0]], np.int32),
      'masked_weights': np.array([[1, 1], [1, 0]], np.float32),
      'regime': np.array([pipeline.VIDEO_TEXT, pipeline.VIDEO], np.int32),
      'alignment_label': np.array([1, 1], np.int32),
  }
  outputs = {'mlm_logits': logits, 'alignment_logits': np.zeros((2, 2), np.float32)}
  weights = dict(text_mlm=1.0, video_mlm=1.0, video_text_mlm=1.0, alignment=1.0)
  _, metrics = objectives.videobert_loss(outputs, batch, weights, objectives.normalizers(batch),
                                         VISUAL_OFFSET, per_modality_softmax=False)
  video_text = -(log_softmax(logits[0, 0])[2] + log_softmax(logits[0, 1])[7]) / 2
  np.testing.assert_allclose(metrics['loss_video_text_mlm'], video_text, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss_video_mlm'], -log_softmax(logits[1, 0])[8], rtol=1e-5)


def test_micro_batch_terms_add_up_to_the_global_batch():
  rng = np.random.default_rng(1)
  batch = {
      'masked_ids': rng.integers(0, 9, (4, 3)).astype(np.int32),
      'masked_weights': (rng.random((4, 3)) < 0.7).astype(np.float32),
      'regime': np.array([0, 1, 2, 2], np.int32),
      'alignment_label': np.array([1, 1, 0, 1], np.int32),
  }
  outputs = {'mlm_logits': rng.normal(size=(4, 3, 9)).astype(np.float32),
             'alignment_logits': rng.normal(size=(4, 2)).astype(np.float32)}
  weights = dict(text_mlm=1.0, video_mlm=1.0, video_text_mlm=1.0, alignment=1.0)
  norms = objectives.normalizers(batch)
  whole, _ = objectives.videobert_loss(outputs, batch, weights, norms, VISUAL_OFFSET)
  halves = sum(
      objectives.videobert_loss({k: v[s] for k, v in outputs.items()},
                                {k: v[s] for k, v in batch.items()}, weights, norms,
                                VISUAL_OFFSET)[0]
      for s in (slice(0, 2), slice(2, 4)))
  np.testing.assert_allclose(halves, whole, rtol=1e-5)


def test_alignment_baseline_metric_is_always_aligned_on_video_text_examples():
  # Four video-text examples, three aligned; the aligned text-only one does not count.
  regime = [pipeline.VIDEO_TEXT] * 4 + [pipeline.TEXT]
  batch = {'masked_ids': np.full((5, 1), 2, np.int32),
           'masked_weights': np.ones((5, 1), np.float32),
           'regime': np.array(regime, np.int32),
           'alignment_label': np.array([1, 0, 1, 1, 1], np.int32)}
  # The head says "mismatched" everywhere: right once out of four.
  outputs = {'mlm_logits': np.zeros((5, 1, 9), np.float32),
             'alignment_logits': np.tile(np.array([[1.0, 0.0]], np.float32), (5, 1))}
  weights = dict(text_mlm=1.0, video_mlm=1.0, video_text_mlm=1.0, alignment=1.0)
  norms = objectives.normalizers(batch)
  _, metrics = objectives.videobert_loss(outputs, batch, weights, norms, VISUAL_OFFSET)
  np.testing.assert_allclose(metrics['accuracy_alignment_baseline'], 0.75)
  np.testing.assert_allclose(metrics['accuracy_alignment'], 0.25)
  # Micro-batches add up to the global batch, as the other terms do.
  halves = sum(objectives.videobert_loss({k: v[s] for k, v in outputs.items()},
                                         {k: v[s] for k, v in batch.items()}, weights, norms,
                                         VISUAL_OFFSET)[1]['accuracy_alignment_baseline']
               for s in (slice(0, 2), slice(2, 5)))
  np.testing.assert_allclose(halves, 0.75)
