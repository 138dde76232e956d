"""Rendered synthetic cooking videos: real MP4 frames and WebVTT narration, by seed.

Each video is a recipe of steps; a step shows one (verb, noun) for 3 to 4.5 s
and is narrated as real instructional ASR is (vlm_jax.data.narration): in one
of many phrasings (held-out ones for dev and test videos), sometimes not at
all, sometimes with a filler sentence, up to a second ahead of or behind the
action. Nouns are objects of their own colour and shape; verbs are tools of
their own colour and shape moving in their own way (up-down cuts, circles,
pouring streams, rising bubbles, shaking). Appearance and motion are what even
a randomly initialised S3D responds to, so clips of the same verb or noun land
near each other in feature space. Every instance varies (background tint,
position, size, speed, phase), so held-out test videos are new instances.
"""

import dataclasses
import math
from typing import Iterator

import numpy as np

from vlm_jax.data import narration

FPS = 20
SIZE = 128
SPLITS = ('train', 'dev', 'test')
# (RGB, shape) per noun; shapes: disc, square, triangle, ellipse, diamond, bar.
NOUN_LOOKS = {
    'tomato': ((215, 35, 30), 'disc'),
    'onion': ((150, 70, 170), 'ellipse'),
    'egg': ((245, 240, 215), 'ellipse_tall'),
    'potato': ((150, 105, 55), 'square'),
    'carrot': ((245, 130, 20), 'triangle'),
    'garlic': ((220, 220, 150), 'diamond'),
    'butter': ((250, 225, 90), 'square_small'),
    'cheese': ((240, 200, 40), 'triangle_wide'),
}
# (RGB, motion) per verb.
VERB_LOOKS = {
    'slice': ((200, 200, 210), 'cut_fast'),
    'chop': ((90, 90, 100), 'cut_slow'),
    'stir': ((200, 240, 40), 'circle'),
    'peel': ((40, 160, 60), 'sweep'),
    'fry': ((30, 30, 30), 'shake'),
    'boil': ((60, 110, 230), 'bubbles'),
    'mix': ((230, 120, 180), 'figure_eight'),
    'pour': ((80, 200, 230), 'stream'),
}


@dataclasses.dataclass(frozen=True)
class Step:
  """What is shown from `start` to `end`; `sentence` is its narration ('' when unnarrated)."""
  verb: str
  noun: str
  start: float
  end: float
  sentence: str


@dataclasses.dataclass(frozen=True)
class Cue:
  """A spoken sentence of the transcript: a step's narration or a filler."""
  start: float
  end: float
  text: str


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  """Everything needed to render a video: drawn once from its seed."""
  video_id: str
  split: str
  steps: tuple[Step, ...]
  cues: tuple[Cue, ...]
  background: tuple[int, int, int]
  seed: int

  @property
  def duration(self) -> float:
    return self.steps[-1].end


def vocabularies(num_verbs: int, num_nouns: int) -> tuple[list[str], list[str]]:
  if not 2 <= num_verbs <= len(VERB_LOOKS) or not 2 <= num_nouns <= len(NOUN_LOOKS):
    raise ValueError(f'num_verbs must be in [2, {len(VERB_LOOKS)}] and num_nouns in '
                     f'[2, {len(NOUN_LOOKS)}], got {num_verbs} and {num_nouns}')
  return list(VERB_LOOKS)[:num_verbs], list(NOUN_LOOKS)[:num_nouns]


def make_spec(video_id: str, split: str, seed: int, verbs: list[str], nouns: list[str],
              min_steps: int = 3, max_steps: int = 5, narrated: float = 0.85,
              fillers: float = 0.3, max_shift: float = 1.0,
              successor_prob: float = 0.0) -> VideoSpec:
  """A recipe drawn from `seed`: steps of 3 to 4.5 s (2 or 3 clips of 1.5 s) and their cues.

  Args:
    video_id: the video's id.
    split: 'train', 'dev' or 'test': which phrasings narrate it (narration.phrasings).
    seed: seeds every choice.
    verbs: the verbs to draw from.
    nouns: the nouns to draw from.
    min_steps: fewest steps.
    max_steps: most steps.
    narrated: probability that a step is narrated.
    fillers: probability that a step's speaking time also holds a filler sentence.
    max_shift: the narration runs up to this many seconds ahead of or behind its step.
    successor_prob: probability that a step after the first shows the verb that
      follows its predecessor's in `verbs` (cyclically) instead of its own draw:
      an order of steps, as recipes have, that next-step anticipation can learn.
      Drawn from a stream of its own, so 0 gives the corpus it always gave.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  rng, order = np.random.default_rng(seed), np.random.default_rng([seed, 1])
  shown, t = [], 0.0
  for _ in range(int(rng.integers(min_steps, max_steps + 1))):
    verb, noun = verbs[int(rng.integers(len(verbs)))], nouns[int(rng.integers(len(nouns)))]
    if shown and order.random() < successor_prob:
      verb = verbs[(verbs.index(shown[-1][0]) + 1) % len(verbs)]
    length = float(rng.choice([3.0, 4.5]))
    shown.append((verb, noun, t, t + length))
    t += length
  steps, cues = [], []
  for verb, noun, start, end in shown:
    sentence = narration.say_step(rng, split, verb, noun) if rng.random() < narrated else ''
    shift = float(rng.uniform(-max_shift, max_shift))
    # Cues do not overlap: one speaker. With steps of at least 3 s and shifts of at most
    # 1 s, a cue keeps at least 1 s.
    a = max(0.0, start + 0.2 + shift, cues[-1].end if cues else 0.0)
    b = min(t, end - 0.2 + shift)
    spoken = [sentence] if sentence else []
    if rng.random() < fillers:
      spoken.insert(int(rng.integers(len(spoken) + 1)), narration.filler(rng))
    # The speaking time is shared in order, a sentence's share by its length.
    weights = np.array([len(text) for text in spoken], float)
    bounds = a + (b - a) * np.concatenate([[0.0], np.cumsum(weights) / max(weights.sum(), 1)])
    cues += [Cue(round(float(bounds[i]), 3), round(float(bounds[i + 1]), 3), text)
             for i, text in enumerate(spoken)]
    steps.append(Step(verb, noun, start, end, sentence))
  grey = int(rng.integers(120, 150))
  background = tuple(int(grey + v) for v in rng.integers(-8, 9, 3))
  return VideoSpec(video_id, split, tuple(steps), tuple(cues), background, seed)


def _shape_mask(shape: str, yy, xx, cy, cx, r, angle):
  dy, dx = yy - cy, xx - cx
  c, s = math.cos(angle), math.sin(angle)
  u, v = c * dx + s * dy, -s * dx + c * dy
  if shape == 'disc':
    return u * u + v * v <= r * r
  if shape == 'ellipse':
    return (u / (1.3 * r)) ** 2 + (v / (0.8 * r)) ** 2 <= 1
  if shape == 'ellipse_tall':
    return (u / (0.7 * r)) ** 2 + (v / (1.1 * r)) ** 2 <= 1
  if shape == 'square':
    return (np.abs(u) <= 0.9 * r) & (np.abs(v) <= 0.9 * r)
  if shape == 'square_small':
    return (np.abs(u) <= 0.6 * r) & (np.abs(v) <= 0.6 * r)
  if shape == 'diamond':
    return np.abs(u) + np.abs(v) <= 1.1 * r
  if shape in ('triangle', 'triangle_wide'):
    w = 1.4 if shape == 'triangle_wide' else 1.0
    return (v <= r) & (v >= -r) & (np.abs(u) <= w * (r - v) / 2 + 0.1)
  raise ValueError(shape)


def _tool_mask(motion: str, yy, xx, cy, cx, r, t, speed, phase, rng_bubbles):
  """The tool's pixels at time t (seconds) for a verb's motion."""
  w = 2 * math.pi * speed * t + phase
  if motion in ('cut_fast', 'cut_slow'):
    freq = 2.0 if motion == 'cut_fast' else 0.8
    y = cy - 1.4 * r + 1.2 * r * (0.5 + 0.5 * math.sin(2 * math.pi * freq * speed * t + phase))
    thick = 5 if motion == 'cut_fast' else 10
    return (np.abs(yy - y) <= thick) & (np.abs(xx - cx) <= 1.8 * r)
  if motion == 'circle':
    ty, tx = cy + 1.2 * r * math.sin(w), cx + 1.2 * r * math.cos(w)
    return (yy - ty) ** 2 + (xx - tx) ** 2 <= (0.6 * r) ** 2
  if motion == 'figure_eight':
    ty, tx = cy + 0.9 * r * math.sin(2 * w), cx + 1.5 * r * math.sin(w)
    return (np.abs(yy - ty) <= 0.55 * r) & (np.abs(xx - tx) <= 0.55 * r)
  if motion == 'sweep':
    tx = cx + 1.3 * r * math.sin(w)
    return (np.abs(xx - tx) <= 8) & (np.abs(yy - cy) <= 1.5 * r)
  if motion == 'shake':
    # A pan under the object; the object itself shakes (see render_frame).
    return ((yy - (cy + 0.9 * r)) ** 2 / (0.45 * r) ** 2 + (xx - cx) ** 2 / (2.0 * r) ** 2) <= 1
  if motion == 'bubbles':
    mask = np.zeros_like(yy, dtype=bool)
    for bx, period, offset in rng_bubbles:
      y = cy + 1.6 * r - ((t * speed / period + offset) % 1.0) * 3.2 * r
      mask |= (yy - y) ** 2 + (xx - (cx + bx * r)) ** 2 <= 36
    return mask
  if motion == 'stream':
    flow = (yy - t * 60 * speed) % 12 < 7
    return (np.abs(xx - cx) <= 9) & (yy < cy) & flow
  raise ValueError(motion)


class _StepLook:
  """The per-step random choices: position, size, speed, phase, bubbles."""

  def __init__(self, rng: np.random.Generator, step: Step):
    self.step = step
    self.cy = SIZE / 2 + rng.uniform(-8, 8)
    self.cx = SIZE / 2 + rng.uniform(-10, 10)
    self.r = rng.uniform(22, 28)
    self.speed = rng.uniform(0.8, 1.25)
    self.phase = rng.uniform(0, 2 * math.pi)
    self.angle = rng.uniform(-0.4, 0.4)
    self.bubbles = [(rng.uniform(-1.2, 1.2), rng.uniform(0.6, 1.2), rng.uniform())
                    for _ in range(6)]


def render_frames(spec: VideoSpec) -> Iterator[np.ndarray]:
  """[SIZE, SIZE, 3] uint8 frames at FPS, streamed."""
  rng = np.random.default_rng(spec.seed + 1)
  looks = [_StepLook(rng, step) for step in spec.steps]
  yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
  background = np.asarray(spec.background, np.float32)
  noise_rng = np.random.default_rng(spec.seed + 2)
  num_frames = int(round(spec.duration * FPS))
  for i in range(num_frames):
    t = i / FPS
    look = next(lk for lk in looks if lk.step.start <= t < lk.step.end or lk is looks[-1])
    local = t - look.step.start
    colour, shape = NOUN_LOOKS[look.step.noun]
    tool_colour, motion = VERB_LOOKS[look.step.verb]
    cy, cx = look.cy, look.cx
    angle = look.angle
    if motion == 'shake':
      cx += 4 * math.sin(2 * math.pi * 6 * local * look.speed)
    if motion == 'sweep':
      angle += 0.6 * local * look.speed
    frame = np.broadcast_to(background, (SIZE, SIZE, 3)).copy()
    frame[_shape_mask(shape, yy, xx, cy, cx, look.r, angle)] = colour
    frame[_tool_mask(motion, yy, xx, look.cy, look.cx, look.r, local, look.speed, look.phase,
                     look.bubbles)] = tool_colour
    frame += noise_rng.normal(0, 3, frame.shape)
    yield np.clip(frame, 0, 255).astype(np.uint8)


def write_mp4(spec: VideoSpec, path: str) -> None:
  """Encodes the frames as H.264 (yuv420p) MP4 at FPS."""
  import av  # pylint: disable=import-outside-toplevel
  with av.open(path, 'w', format='mp4') as container:
    stream = container.add_stream('libx264', rate=FPS)
    stream.width = stream.height = SIZE
    stream.pix_fmt = 'yuv420p'
    stream.options = {'crf': '23', 'preset': 'veryfast'}
    for frame in render_frames(spec):
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())


def _timestamp(seconds: float) -> str:
  ms = int(round(seconds * 1000))
  return f'{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}'


def vtt(spec: VideoSpec) -> str:
  """WebVTT narration: the spec's cues, in time order."""
  lines = ['WEBVTT', '']
  for cue in spec.cues:
    lines += [f'{_timestamp(cue.start)} --> {_timestamp(cue.end)}', cue.text, '']
  return '\n'.join(lines)
