"""YouCook2 ingestion: every validation segment, the label rule, missing videos."""

import json
import subprocess
import sys

import pytest

from vlm_jax.stages import prepare_youcook2
from vlm_jax.data import youcook2

VERBS = youcook2.load_labels('verbs')
NOUNS = youcook2.load_labels('nouns')


def _lines(path):
  return path.read_text(encoding='utf-8').splitlines()


def _jsonl(path):
  return [json.loads(line) for line in _lines(path)]


def test_label_lists():
  for words in (VERBS, NOUNS):
    assert words and all(w.isalpha() and w == w.lower() for w in words)
    assert len(set(words)) == len(words)
  assert not set(VERBS) & set(NOUNS)
  # The most frequent YouCook2 step verbs and objects are there.
  assert VERBS[:4] == ['add', 'place', 'mix', 'cut']
  assert {'onion', 'oil', 'chicken', 'pan', 'egg'} <= set(NOUNS)


@pytest.mark.parametrize('sentence, verb, noun', [
    ('add oil to the pan', 'add', 'oil'),
    # The first listed verb in sentence order, not in list order ('add' is listed first).
    ('chop the onions and add them to the pan', 'chop', 'onion'),
    # Inflections: plural nouns, -ed/-ing verbs with -e restored or doubling undone.
    ('sliced tomatoes go on top', 'slice', 'tomato'),
    ('chopped potatoes into the pot', 'chop', 'potato'),
    ('frying the noodles in a wok', 'fry', 'noodle'),
    ('fried the leaves', 'fry', 'leaf'),
    ('stirring the sauces', 'stir', 'sauce'),
    ('mixes the chilies', 'mix', 'chili'),
    ('beaten eggs go in the bowl', 'beat', 'egg'),
    # The noun after the verb wins over one before it (the verb's object).
    ('in a bowl whisk the eggs', 'whisk', 'egg'),
    # ...but one before the verb is used when none follows.
    ('the chicken is done so remove it', 'remove', 'chicken'),
    # Light verbs are not labels; the next listed verb is.
    ('take the bacon and fry it', 'fry', 'bacon'),
    # 'ground' is never a verb (ground beef); case and punctuation do not matter.
    ('Ground beef, then SPRINKLE salt!', 'sprinkle', 'salt'),
    # No listed noun / no listed verb / neither.
    ('stir the mixture together', 'stir', None),
    ('the garlic', None, 'garlic'),
    ('pick the ends off the verdalago', None, None),
])
def test_label_rule(sentence, verb, noun):
  assert youcook2.label_sentence(sentence, VERBS, NOUNS) == (verb, noun)


def _annotations(tmp_path):
  """A hand-made annotation file: 2 validation videos (3 segments), 1 training."""
  database = {
      'valA': {'subset': 'validation', 'duration': 100.0, 'recipe_type': '101', 'annotations': [
          {'segment': [1, 5], 'id': 0, 'sentence': 'add oil to the pan'},
          {'segment': [6, 9], 'id': 1, 'sentence': 'stir the mixture  together'}]},
      'valB': {'subset': 'validation', 'duration': 50.5, 'recipe_type': '102', 'annotations': [
          {'segment': [0, 3], 'id': 0, 'sentence': 'chop the onions'}]},
      'trainC': {'subset': 'training', 'duration': 20.0, 'recipe_type': '101', 'annotations': [
          {'segment': [2, 4], 'id': 0, 'sentence': 'boil the water'}]},
  }
  path = tmp_path / 'ann.json'
  path.write_text(json.dumps({'database': database}))
  return path


def test_prepare_hand_made(tmp_path):
  videos = tmp_path / 'videos'
  (videos / 'nested').mkdir(parents=True)
  (videos / 'nested' / 'valB.WebM').write_bytes(b'not really a video')
  (videos / 'valB.txt').write_text('not a video extension')
  out = tmp_path / 'out'
  manifest = prepare_youcook2.run(str(_annotations(tmp_path)), str(out), str(videos))
  segments = _jsonl(out / 'segments.jsonl')
  assert [s['clip_id'] for s in segments] == ['valA_0', 'valA_1', 'valB_0']
  assert segments[1]['sentence'] == 'stir the mixture together'
  assert (segments[2]['start'], segments[2]['end'], segments[2]['duration']) == (0.0, 3.0, 50.5)
  assert segments[0]['video'] is None
  assert segments[2]['video'] == str(videos / 'nested' / 'valB.WebM')
  assert [(s['verb'], s['noun']) for s in segments] == [('add', 'oil'), ('stir', None),
                                                        ('chop', 'onion')]
  assert segments[0]['verb_index'] == VERBS.index('add')
  assert segments[2]['noun_index'] == NOUNS.index('onion')
  assert [s['clip_id'] for s in _jsonl(out / 'classification.jsonl')] == ['valA_0', 'valB_0']
  refs = json.loads((out / 'captioning_references.json').read_text())
  assert refs == {'valA_0': ['add oil to the pan'], 'valA_1': ['stir the mixture together'],
                  'valB_0': ['chop the onions']}
  assert _lines(out / 'missing_videos.txt') == ['valA']
  assert _lines(out / 'verbs.txt') == VERBS and _lines(out / 'nouns.txt') == NOUNS
  assert json.loads((out / 'manifest.json').read_text()) == manifest
  assert manifest['missing_videos'] == ['valA']
  assert manifest['counts']['total'] == dict(
      segments=3, videos=2, classification=2, unlabelled=1, no_verb=0, no_noun=1,
      videos_found=1, videos_missing=1, segments_with_video=1, classification_with_video=1)
  assert manifest['rule'] == youcook2.LABEL_RULE

  # All subsets, counted per subset; no --videos: no lookup, nothing "missing".
  manifest = prepare_youcook2.run(str(_annotations(tmp_path)), str(tmp_path / 'all'),
                                  subset='all')
  assert {k: v['segments'] for k, v in manifest['counts']['per_subset'].items()} == {
      'validation': 3, 'training': 1}
  assert manifest['counts']['total']['videos_missing'] is None
  assert _lines(tmp_path / 'all' / 'missing_videos.txt') == []


def test_bad_annotations(tmp_path):
  bad = tmp_path / 'bad.json'
  bad.write_text(json.dumps({'videos': {}}))
  with pytest.raises(ValueError, match='YouCook2 annotations'):
    youcook2.read_segments(str(bad))
  bad.write_text(json.dumps({'database': {'v1': {'subset': 'validation', 'annotations': [
      {'segment': [5, 2], 'id': 0, 'sentence': 'x'}]}}}))
  with pytest.raises(ValueError, match='video v1: .*bad span'):
    youcook2.read_segments(str(bad))
  with pytest.raises(FileNotFoundError):
    prepare_youcook2.run(str(_annotations(tmp_path)), str(tmp_path / 'o'),
                         str(tmp_path / 'no_such_folder'))


def test_prepare_youcook2_real_validation(realdata, tmp_path):
  """Every validation segment of the real file, with the count taken straight from the JSON."""
  path = realdata / 'youcook2' / 'youcookii_annotations_trainval.json'
  database = json.loads(path.read_text(encoding='utf-8'))['database']
  val = {vid: e for vid, e in database.items() if e['subset'] == 'validation'}
  expected = sum(len(e['annotations']) for e in val.values())
  # The split list names the same 457 videos (lines are <recipe_type>/<youtube_id>).
  listed = {line.split('/')[1] for line in _lines(realdata / 'youcook2' / 'val_list.txt')}
  assert set(val) == listed

  present = sorted(val)[:2]
  videos = tmp_path / 'videos'
  (videos / 'validation' / '101').mkdir(parents=True)
  (videos / 'validation' / '101' / f'{present[0]}.mp4').write_bytes(b'')
  (videos / f'{present[1]}.MKV').write_bytes(b'')
  training_id = next(vid for vid, e in database.items() if e['subset'] == 'training')
  (videos / f'{training_id}.mp4').write_bytes(b'')  # not in the subset: ignored
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'prepare-youcook2', '--annotations', str(path),
       '--videos', str(videos), '--output', str(out)],
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert f'{expected} segments from {len(val)} videos (validation)' in proc.stdout

  segments = _jsonl(out / 'segments.jsonl')
  assert len(segments) == expected == 3492
  assert {(s['video_id'], s['segment_id']) for s in segments} == {
      (vid, a['id']) for vid, e in val.items() for a in e['annotations']}
  classification = _jsonl(out / 'classification.jsonl')
  assert all(s['verb'] in VERBS and s['noun'] in NOUNS for s in classification)
  unlabelled = [s for s in segments if s['verb'] is None or s['noun'] is None]
  assert len(classification) + len(unlabelled) == expected
  # The fixed lists label most steps (93.9% when the lists were written).
  assert len(classification) / expected > 0.9
  refs = json.loads((out / 'captioning_references.json').read_text())
  assert len(refs) == expected
  assert refs[f'{present[0]}_{val[present[0]]["annotations"][0]["id"]}'] == [
      ' '.join(val[present[0]]['annotations'][0]['sentence'].split())]

  missing = _lines(out / 'missing_videos.txt')
  assert sorted(missing) == sorted(set(val) - set(present))
  with_video = {s['video_id'] for s in segments if s['video'] is not None}
  assert with_video == set(present)
  manifest = json.loads((out / 'manifest.json').read_text())
  total = manifest['counts']['total']
  assert total['segments'] == expected and total['videos'] == len(val) == 457
  assert total['classification'] == len(classification)
  assert total['unlabelled'] == len(unlabelled)
  assert total['videos_found'] == 2 and total['videos_missing'] == 455
  assert total['segments_with_video'] == sum(len(val[v]['annotations']) for v in present)
  assert manifest['counts']['per_subset']['validation'] == total
  assert sum(manifest['verb_counts'].values()) == len(classification)
