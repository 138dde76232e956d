"""The demo report's pictures and measurements, without a demo run.

`layout_problems` reads a figure's drawn text boxes (matplotlib window extents
after the layout engine ran) and says where one covers a frame or another text;
tests/test_demo.py applies it to the runlocal demo's own figures.
"""

import matplotlib
import numpy as np
import pytest

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
from matplotlib.text import Text  # pylint: disable=wrong-import-position

from vlm_jax.demo import report  # pylint: disable=wrong-import-position
from vlm_jax.demo import videobert_report as demo  # pylint: disable=wrong-import-position
from vlm_jax.stages import caption  # pylint: disable=wrong-import-position
from vlm_jax.train import report as train_report  # pylint: disable=wrong-import-position
from vlm_jax.videobert import alignment, generation  # pylint: disable=wrong-import-position

DPI = 100  # the demo's savefig dpi


def _drawn_texts(fig) -> list[Text]:
  """The non-empty texts the figure draws: not those of axes turned off, nor the labels of
  ticks outside the view (matplotlib keeps them, undrawn)."""
  hidden = set()
  for ax in fig.get_axes():
    for axis in (ax.xaxis, ax.yaxis):
      if not ax.axison:
        hidden.update(id(t) for t in axis.findobj(Text))
        continue
      low, high = sorted(axis.get_view_interval())
      margin = 1e-9 * (high - low)
      for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        if not low - margin <= tick.get_loc() <= high + margin:
          hidden.update((id(tick.label1), id(tick.label2)))
  return [t for t in fig.findobj(Text)
          if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def layout_problems(fig, min_frame_px: int = 0) -> list[str]:
  """Texts overlapping a picture or each other or cut by the figure's edge, and pictures
  under `min_frame_px`, at DPI."""
  fig.set_dpi(DPI)
  fig.draw_without_rendering()  # runs the layout engine
  renderer = fig.canvas.get_renderer()
  pictures = [ax.get_window_extent(renderer) for ax in fig.get_axes() if ax.images]
  texts = [(t.get_text(), t.get_window_extent(renderer)) for t in _drawn_texts(fig)]
  problems = [f'a picture of {box.width:.0f} x {box.height:.0f} px' for box in pictures
              if min(box.width, box.height) < min_frame_px]
  page = fig.bbox.padded(1)
  for i, (text, box) in enumerate(texts):
    if not (page.contains(box.x0, box.y0) and page.contains(box.x1, box.y1)):
      problems.append(f'{text!r} outside the figure')
    problems += [f'{text!r} over a picture' for picture in pictures
                 if box.shrunk(0.98, 0.98).overlaps(picture)]
    problems += [f'{text!r} over {other!r}' for other, other_box in texts[i + 1:]
                 if box.shrunk(0.98, 0.98).overlaps(other_box)]
  return problems


def _frames(token: int) -> np.ndarray:
  return np.full((112, 112, 3), (token % 7) / 7, np.float32)


def test_layout_check_finds_a_caption_over_a_frame_and_texts_over_each_other():
  fig, ax = plt.subplots(figsize=(2, 2))
  ax.imshow(_frames(1))
  ax.axis('off')
  fig.text(0.5, 0.5, 'a caption on the frame')
  fig.text(0.05, 0.95, 'one title')
  fig.text(0.06, 0.95, 'another title')
  fig.text(0.9, 0.1, 'cut by the edge')
  problems = layout_problems(fig, min_frame_px=300)
  plt.close(fig)
  assert "'a caption on the frame' over a picture" in problems
  assert "'one title' over 'another title'" in problems
  assert "'cut by the edge' outside the figure" in problems
  assert any(p.startswith('a picture of') for p in problems)


def test_strips_have_large_frames_and_no_text_over_them():
  rows = [(f'"a long narration sentence number {i} of a held-out step"   (step: chop potato)',
           list(range(8)), [f'#{t}\nchop potato' for t in range(8)]) for i in range(6)]
  fig = generation.strips_figure(rows, _frames, 'a title over all the rows', gaps=(3,))
  assert layout_problems(fig, min_frame_px=96) == []
  plt.close(fig)


def _forecast_items():
  return [{'token': token, 'rate': rate, 'next': [token, 5, 6], 'next_other': [5, 6, 7],
           'p_self': 0.5} for token in (3, 4, 9) for rate in (1, 2, 3)]


def test_forecast_figure_groups_rates_and_keeps_labels_off_the_frames():
  labels = {'verb': ['stir'] * 10, 'noun': ['egg'] * 10}
  fig = demo.forecast_figure(_forecast_items(), labels, _frames)
  assert layout_problems(fig, min_frame_px=96) == []
  titles = [ax.get_title() for ax in fig.get_axes() if ax.images]
  assert titles[:5] == ['start #3\nstir egg', '+1: #5\nstir egg', '+1: #6\nstir egg',
                        '+1: #7\nstir egg', '+2: #5\nstir egg']
  # One row per start token, each in its own subfigure with the token's caption.
  assert [f._suptitle.get_text() for f in fig.subfigs] == [
      f'from #{t}: P(#{t} again) 0.50 at +1, 0.50 at +2, 0.50 at +3' for t in (3, 4, 9)]
  plt.close(fig)


def test_clipbert_clips_figure_keeps_long_captions_inside_and_off_the_frames():
  from vlm_jax.demo import clipbert as clipbert_demo  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  long = 'i am going to show you how to slice the onion for the soup now.'
  panels = [(rng.integers(0, 255, (frames, 64, 64, 3), np.uint8),
             f'"{long}"  (12.0-15.5 s)\nranked first: "{long}"  (another step)')
            for frames in (2, 2, 4)]
  fig = clipbert_demo.clips_figure(panels)
  assert layout_problems(fig, min_frame_px=96) == []
  assert sum(bool(ax.images) for ax in fig.get_axes()) == 8
  plt.close(fig)


def _held_out():
  value = {'mean': 0.8, 'ci95': [0.75, 0.85]}
  return {'test': {'num_steps': 200, 'num_negatives': 40, 'negative_prob': 0.2,
                   'accuracy': value, 'always_aligned': value,
                   'pairwise': {'mean': 0.5, 'ci95': [0.43, 0.57]}, 'pairwise_chance': 0.5,
                   'cloze_pairwise': {'mean': 0.8, 'ci95': [0.74, 0.86]}}}


def test_alignment_figure_draws_the_always_aligned_baseline():
  rows = [{'step': s, 'accuracy_alignment': 0.8, 'loss_alignment': 0.5} for s in (20, 40, 60)]
  mix = {'negative_prob': 0.2}
  held_out = _held_out()
  held_out['test']['num_steps'] = 12345  # a long title still fits
  fig = demo.alignment_figure(rows, mix, held_out)
  assert layout_problems(fig) == []
  accuracy, loss, _ = fig.get_axes()
  (baseline,) = [line for line in accuracy.lines if line.get_linestyle() == '--']
  np.testing.assert_allclose(baseline.get_ydata(), 0.8)
  (entropy,) = [line for line in loss.lines if line.get_linestyle() == '--']
  np.testing.assert_allclose(entropy.get_ydata(), -(0.2 * np.log(0.2) + 0.8 * np.log(0.8)))
  plt.close(fig)


def test_curves_draw_a_baseline_dashed_in_its_metrics_colour():
  rows = [{'step': s, 'loss': 2.0 / s, 'accuracy_masked_tokens': 0.1 * i,
           'accuracy_alignment': 0.5 + 0.1 * i, 'accuracy_alignment_baseline': b}
          for i, (s, b) in enumerate([(10, 0.75), (20, 0.8), (30, 0.85)])]
  fig = train_report.curves_figure(rows)
  assert layout_problems(fig) == []
  _, accuracies = fig.get_axes()
  (dashed,) = [line for line in accuracies.lines if line.get_linestyle() == '--']
  (metric,) = [line for line in accuracies.lines if line.get_label() == 'accuracy_alignment']
  np.testing.assert_allclose(dashed.get_ydata(), [0.75, 0.8, 0.85])
  assert dashed.get_color() == metric.get_color()
  assert dashed.get_label() == 'accuracy_alignment baseline'
  solid = [line for line in accuracies.lines if line.get_linestyle() == '-']
  assert 'accuracy_alignment_baseline' not in [line.get_label() for line in solid]
  assert not any(np.allclose(line.get_ydata(), [0.75, 0.8, 0.85]) for line in solid)
  plt.close(fig)
  # Without its metric, the baseline is still drawn dashed.
  fig = train_report.curves_figure([{k: v for k, v in r.items() if k != 'accuracy_alignment'}
                                    for r in rows])
  (dashed,) = [line for line in fig.get_axes()[1].lines if line.get_linestyle() == '--']
  np.testing.assert_allclose(dashed.get_ydata(), [0.75, 0.8, 0.85])
  plt.close(fig)


def test_alignment_section_says_when_the_head_is_at_the_baseline():
  mix = {'negative_prob': 0.2, 'video_text_share': 0.6, 'mismatched_share': 0.12,
         'mask_prob': 0.5}
  held_out = _held_out()
  held_out['test'].update(predicted_aligned=1.0, mean_p_aligned={'own': 0.8, 'mismatched': 0.8},
                          mismatches_sharing_verb_and_noun=0.03)
  assert 'learned nothing but the label split' in demo.alignment_section(held_out, mix, 900)
  held_out['test']['pairwise'] = {'mean': 0.7, 'ci95': [0.62, 0.78]}
  assert 'separates own from mismatched' in demo.alignment_section(held_out, mix, 900)


def test_table_right_aligns_numbers_only():
  html = report.table(['what', 'value'], [['head accuracy', '44.4% [38.8, 50.4]'],
                                          ['steps', 12], ['a sentence, 2 words', 'x']])
  assert '<td class="number">44.4% [38.8, 50.4]</td>' in html
  assert '<td class="number">12</td>' in html
  assert '<td>head accuracy</td>' in html and '<td>x</td>' in html


def test_mismatched_partners_come_from_other_videos():
  videos = ['a', 'a', 'b', 'c', 'c', 'c']
  partners = alignment.mismatched_partners(videos, seed=3)
  assert all(videos[j] != v for v, j in zip(videos, partners))
  with pytest.raises(ValueError, match='two videos'):
    alignment.mismatched_partners(['a', 'a'])


def test_alignment_sequence_is_cut_as_training_cuts_it():
  from vlm_jax.videobert import vocab as vocab_lib  # pylint: disable=import-outside-toplevel
  vocab = vocab_lib.JointVocab(text_vocab_size=1000, num_visual_tokens=10)
  ids, types = alignment.sequence(list(range(200, 230)), [1, 2, 3, 4, 5, 6, 7, 8], vocab, 16)
  # 13 places after [CLS], [>], [SEP]: video keeps half (6), text the rest (7).
  assert len(ids) == 16 and ids[0] == vocab.cls_id and ids[-1] == vocab.sep_id
  assert ids[1:8] == list(range(200, 207)) and ids[8] == vocab.video_sep_id
  assert ids[9:15] == [vocab.visual_id(t) for t in range(1, 7)]
  assert types == [0] * 9 + [1] * 7


def test_token_labels_are_the_majority_of_the_clips_in_labelled_steps():
  times = np.array([[0, 1.5], [1.5, 3], [3, 4.5], [4.5, 6], [6, 7.5]])
  tokens = {'v': (np.array([0, 0, 1, 0, 2]), times)}
  steps = [{'video_id': 'v', 'start': 0, 'end': 3, 'verb': 'chop', 'noun': 'egg'},
           {'video_id': 'v', 'start': 3, 'end': 6, 'verb': 'fry', 'noun': 'egg'}]
  labels = generation.token_labels(tokens, steps, num_tokens=4)
  # Token 0: two clips in the chop step, one in the fry step; token 2 lies outside every step.
  assert labels['verb'] == ['chop', 'fry', None, None]
  assert labels['noun'] == ['egg', 'egg', None, None]
  assert labels['count'] == [3, 1, 1, 0]


def test_nearest_caption_is_the_nearest_standardised_training_step():
  # Dimension 1 has a thousand times the scale of dimension 0: raw distances would follow
  # it and pick 'a' and 'c'.
  train = np.array([[1.0, 1000.0], [-1.0, 1010.0], [0.0, -1000.0], [1.0, -1010.0]])
  test = np.array([[-0.9, 1000.5], [0.9, -1000.5]])
  assert caption.nearest_captions(train, ['a', 'b', 'c', 'd'], test) == ['b', 'd']


def test_screenshot_is_cut_below_the_page(tmp_path):
  if report.browser() is None:
    pytest.skip('no Chromium (apt-get install chromium)')
  page = tmp_path / 'index.html'
  page.write_text('<html><body style="margin:0"><div style="height:300px;background:#000">'
                  '</div></body></html>')
  assert report.screenshot(str(page), str(tmp_path / 'shot.png'), width=400, height=2000)
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(tmp_path / 'shot.png') as shot:
    assert shot.width == 400 and 300 <= shot.height <= 330
    assert shot.convert('L').getpixel((200, 100)) < 20
