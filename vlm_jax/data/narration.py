"""How the synthetic corpora narrate a (verb, noun) step: phrasings, fillers, held-out wording.

Real instructional ASR says a step in many ways, says things that are no step
at all, and runs ahead of or behind the action. The synthetic corpora copy
that, and keep evaluation honest: training videos are narrated with
TRAIN_PHRASINGS, dev and test videos with HELD_OUT_PHRASINGS only, so no
held-out sentence (a retrieval query, a caption reference) is a training
sentence; and no phrasing is VideoBERT's zero-shot prompt ("now let me show
you how to [MASK] the [MASK]."), so the classification prompt is never seen
in training. tests/test_synth_videos.py asserts both on a generated corpus.
"""

from typing import Sequence

import numpy as np

# `{verb}` is the verb's bare form, `{noun}` the noun.
TRAIN_PHRASINGS = (
    'next we {verb} the {noun}.',
    'then you {verb} the {noun} like this.',
    'go ahead and {verb} the {noun}.',
    "i'm going to {verb} the {noun} now.",
    'we need to {verb} the {noun}.',
    'time to {verb} the {noun}.',
    'you want to {verb} the {noun} really well.',
    'so first {verb} the {noun}.',
    'after that {verb} the {noun}.',
    'just {verb} the {noun} for a bit.',
    "let's {verb} the {noun}.",
    'okay so we {verb} the {noun} here.',
    'make sure you {verb} the {noun}.',
    'carefully {verb} the {noun}.',
    'now {verb} the {noun} a little.',
    'i like to {verb} the {noun} first.',
    'you can {verb} the {noun} with this.',
    'the next thing is to {verb} the {noun}.',
    'remember to {verb} the {noun}.',
    'we will {verb} the {noun} next.',
    'take your {noun} and {verb} it.',
    'grab the {noun} and {verb} it gently.',
    'here i {verb} the {noun}.',
    'then i {verb} my {noun}.',
    'you should {verb} the {noun} now.',
    'start to {verb} the {noun}.',
    'keep going and {verb} the {noun}.',
    '{verb} the {noun} until it looks right.',
    'and then {verb} the {noun}.',
    'try to {verb} the {noun} evenly.',
    "it's important to {verb} the {noun}.",
    'this is where we {verb} the {noun}.',
)
HELD_OUT_PHRASINGS = (
    'now we are going to {verb} the {noun}.',
    'at this point {verb} the {noun}.',
    'the {noun}, we {verb} it next.',
    'once that is done, {verb} the {noun}.',
    "you'll want to {verb} the {noun}.",
    'let us {verb} the {noun} together.',
    'quickly {verb} the {noun}.',
    'our next step is to {verb} the {noun}.',
    'watch me {verb} the {noun}.',
    'i always {verb} the {noun} at this stage.',
)
# Spoken between or over the steps; they name no verb or noun.
FILLERS = (
    'okay.',
    'that looks good.',
    "don't forget to subscribe.",
    'this is my favourite part.',
    'it smells amazing already.',
    'hi everyone, welcome back to my kitchen.',
    'thanks for watching.',
    'you can use any brand you like.',
    'my kids love this one.',
    'let me know in the comments.',
    "be careful, it's hot.",
    'see how easy that was.',
    'a little goes a long way.',
    'so yeah.',
)
# VideoBERT's zero-shot classification prompt (the paper's); never a narration.
PROMPT = 'now let me show you how to {verb} the {noun}.'


def phrasings(split: str) -> Sequence[str]:
  """The phrasings narrating videos of `split` ('train', or a held-out 'dev' / 'test')."""
  return TRAIN_PHRASINGS if split == 'train' else HELD_OUT_PHRASINGS


def say_step(rng: np.random.Generator, split: str, verb: str, noun: str) -> str:
  """One narration of a step, in a phrasing of `split`."""
  options = phrasings(split)
  return options[int(rng.integers(len(options)))].format(verb=verb, noun=noun)


def filler(rng: np.random.Generator) -> str:
  return FILLERS[int(rng.integers(len(FILLERS)))]
