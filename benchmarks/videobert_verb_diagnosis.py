"""Why zero-shot verbs lag nouns in the demo: readouts of one demo run, and a longer training.

  python benchmarks/videobert_verb_diagnosis.py --workdir runs/demo [--split dev]
  python benchmarks/videobert_verb_diagnosis.py --workdir runs/demo --retrain OUT --steps 1800

The first form reads the run's trained VideoBERT on the split's steps three
ways: the paper's prompt, training phrasings as prompts (is the prompt the
problem?), and the prompt scored against its language prior (log p(w | prompt,
video) - log p(w | prompt), is the text prior the problem?), and prints the
verb confusion. The second trains the demo's VideoBERT again on the run's own
records for --steps, saving every 300 steps, and reads each checkpoint with the
paper's prompt (does more training help?). Results: benchmarks/RESULTS.md.
"""

import argparse
import collections
import json
import os

from vlm_jax import host_memory

host_memory.retain_freed_memory()
os.environ.setdefault('JAX_THREEFRY_PARTITIONABLE', 'true')

import numpy as np  # pylint: disable=wrong-import-position

from configs import demo as demo_config  # pylint: disable=wrong-import-position
from vlm_jax.data import narration  # pylint: disable=wrong-import-position
from vlm_jax.data import segments as segments_lib  # pylint: disable=wrong-import-position
from vlm_jax.demo import common  # pylint: disable=wrong-import-position
from vlm_jax.demo import videobert as demo_videobert  # pylint: disable=wrong-import-position
from vlm_jax.stages import action_classification as action_eval  # pylint: disable=wrong-import-position
from vlm_jax.videobert import action_classification  # pylint: disable=wrong-import-position
from vlm_jax.videobert import codebook as codebook_lib  # pylint: disable=wrong-import-position
from vlm_jax.videobert import inference  # pylint: disable=wrong-import-position
from vlm_jax.videobert import trainer  # pylint: disable=wrong-import-position

PROMPTS = (narration.PROMPT, 'next we {verb} the {noun}.', "let's {verb} the {noun}.",
           'we need to {verb} the {noun}.')


def _split(workdir: str, split: str):
  corpus = os.path.join(workdir, 'corpus')
  videos = [v for v in common.read_steps(corpus) if v['split'] == split]
  verbs = common.read_labels(os.path.join(corpus, 'verbs.txt'))
  nouns = common.read_labels(os.path.join(corpus, 'nouns.txt'))
  codebook = codebook_lib.Codebook.load(os.path.join(workdir, 'codebook.npz'))
  tokens, _ = action_eval.video_tokens(os.path.join(workdir, 'features', split), codebook,
                                       [v['video_id'] for v in videos])
  steps = [s for s in common.segments(videos) if s['video_id'] in tokens]
  visual = [segments_lib.tokens_in(*tokens[s['video_id']], float(s['start']), float(s['end']))
            for s in steps]
  return (visual, verbs, nouns, np.array([verbs.index(s['verb']) for s in steps]),
          np.array([nouns.index(s['noun']) for s in steps]))


def _top1(loaded, data, template: str = narration.PROMPT, against_prior: bool = False):
  visual, verbs, nouns, _, _ = data
  verb, noun = action_classification.scores(loaded, visual, verbs, nouns, template=template)
  if against_prior:
    prior_verb, prior_noun = action_classification.scores(loaded, visual, verbs, nouns, False,
                                                          template)
    verb, noun = verb - prior_verb, noun - prior_noun
  return verb.argmax(1), noun.argmax(1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='a finished `vlm-jax demo` workdir')
  parser.add_argument('--split', default='dev', choices=('dev', 'test'))
  parser.add_argument('--retrain', help='train again into this folder')
  parser.add_argument('--steps', type=int, default=1800)
  args = parser.parse_args()
  data = _split(args.workdir, args.split)
  _, verbs, _, verb_labels, noun_labels = data
  if not args.retrain:
    loaded = inference.load(os.path.join(args.workdir, 'train'))
    for template in PROMPTS:
      verb, noun = _top1(loaded, data, template)
      print(json.dumps({'prompt': template, 'verb': round(100 * (verb == verb_labels).mean(), 1),
                        'noun': round(100 * (noun == noun_labels).mean(), 1)}))
    verb, noun = _top1(loaded, data, against_prior=True)
    print(json.dumps({'prompt': narration.PROMPT, 'scored_against_prior': True,
                      'verb': round(100 * (verb == verb_labels).mean(), 1),
                      'noun': round(100 * (noun == noun_labels).mean(), 1)}))
    verb, _ = _top1(loaded, data)
    confusion = collections.Counter(zip(verb_labels.tolist(), verb.tolist()))
    print('verb confusion (rows: true, columns: predicted):', ' '.join(verbs))
    for i, name in enumerate(verbs):
      print(f'{name:>8}', ' '.join(f'{confusion[(i, j)]:5d}' for j in range(len(verbs))))
    return
  stored = inference.load(os.path.join(args.workdir, 'train')).config
  config = demo_config.get_config()
  config.seed = int(stored.seed)
  train_config = demo_videobert._train_config(  # pylint: disable=protected-access
      config, os.path.join(args.workdir, 'records'), int(stored.model.num_visual_tokens))
  train_config.train.num_steps, train_config.train.checkpoint_every = args.steps, 300
  train_config.train.keep_checkpoints = args.steps // 300 + 1
  trainer.train(train_config, args.retrain)
  for step in range(300, args.steps + 1, 300):
    verb, noun = _top1(inference.load(args.retrain, step), data)
    print(json.dumps({'step': step, 'verb': round(100 * (verb == verb_labels).mean(), 1),
                      'noun': round(100 * (noun == noun_labels).mean(), 1)}))


if __name__ == '__main__':
  main()
