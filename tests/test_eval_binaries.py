"""The zero-shot evaluation binaries end to end on hand-made embedding files."""

import importlib
import json
import pkgutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from vlm_jax import evaluate
from vlm_jax.evaluate import _embeddings
from vlm_jax.evaluate import action_segmentation
from vlm_jax.evaluate import retrieval as retrieval_eval
from vlm_jax.evaluate import step_localization
from vlm_jax.evaluate import video_qa


def _eval(task: str, *args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'eval', task, *map(str, args)],
                        capture_output=True, text=True, check=True, timeout=60)


def _texts(folder, table: dict[str, list[float]], name='texts'):
  """texts.txt + texts.npy for {text: embedding}."""
  (folder / f'{name}.txt').write_text(''.join(t + '\n' for t in table), encoding='utf-8')
  np.save(folder / f'{name}.npy', np.array(list(table.values()), np.float32))
  return folder / f'{name}.npy'


def _videos(folder, arrays: dict[str, np.ndarray]):
  folder.mkdir(exist_ok=True)
  for vid, a in arrays.items():
    np.save(folder / f'{vid}.npy', np.asarray(a, np.float32))
  return folder


def test_eval_lists_the_new_tasks():
  out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'eval'], capture_output=True,
                       text=True, check=True).stdout
  for task in ('retrieval', 'video-qa', 'action-segmentation', 'step-localization',
               'moment-ranking'):
    assert task in out


def test_eval_help_prints_the_usage_and_the_flags():
  # The shared flags (_eval_flags) are listed as the command's own, beside its annotations.
  for task, own in (('retrieval', '--backend'), ('video-qa', '--ties'),
                    ('action-segmentation', '--labels'), ('step-localization', '--tasks'),
                    ('moment-ranking', '--annotations')):
    out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'eval', task, '--help'],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.startswith(f'vlm-jax eval {task}: '), out
    for flag in ('--annotations', own, '--features', '--text_embeddings', '--texts',
                 '--output', '--write_texts'):
      assert f'  {flag}: ' in out, (task, flag, out)


def test_retrieval_binary(tmp_path):
  (tmp_path / 'test.csv').write_text(
      'key,vid_key,video_id,sentence\n'
      'ret0,msr1,video1,a cat\nret1,msr2,video2,a dog\n'
      'ret2,msr3,video3,a fish\nret3,msr4,video4,a bird\n', encoding='utf-8')
  _eval('retrieval', '--annotations', tmp_path / 'test.csv', '--write_texts',
        tmp_path / 'texts.txt')
  assert (tmp_path / 'texts.txt').read_text().split('\n') == [
      'a cat', 'a dog', 'a fish', 'a bird', '']
  # Videos one-hot; video3 has no file. Scores per query over (video1, video2, video4):
  # cat (1, 0, 0) -> rank 1; dog (.5, .2, .9) -> rank 3; bird (0, .3, .1) -> rank 2.
  embeddings = _texts(tmp_path, {'a cat': [1, 0, 0, 0], 'a dog': [0.5, 0.2, 0, 0.9],
                                 'a fish': [0, 0, 1, 0], 'a bird': [0, 0.3, 0, 0.1]})
  features = _videos(tmp_path / 'features', {'video1': [1, 0, 0, 0], 'video2': [0, 1, 0, 0],
                                             'video4': [0, 0, 0, 1]})
  _eval('retrieval', '--annotations', tmp_path / 'test.csv', '--features', features,
        '--text_embeddings', embeddings, '--output', tmp_path / 'm.json')
  result = json.loads((tmp_path / 'm.json').read_text())
  assert result['metrics'] == {'R@1': pytest.approx(1 / 3), 'R@5': 1.0, 'R@10': 1.0,
                               'median_rank': 2.0, 'mean_rank': 2.0, 'count': 3}
  assert result['missing_videos'] == [{'video_id': 'video3', 'reason': 'missing'}]
  assert result['skipped_queries'] == [{'query_id': 'ret2', 'reason': 'video video3 unavailable'}]
  assert result['counts']['gallery'] == 3
  # faiss top-2: the rank-3 query is censored (a miss for every R@k, no mean rank).
  _eval('retrieval', '--annotations', tmp_path / 'test.csv', '--features', features,
        '--text_embeddings', embeddings, '--output', tmp_path / 'f.json', '--backend', 'faiss',
        '--faiss_k', 2)
  m = json.loads((tmp_path / 'f.json').read_text())['metrics']
  assert (m['R@1'], m['median_rank'], m['mean_rank']) == (pytest.approx(1 / 3), 2.0, None)


def test_retrieval_reads_real_annotations(realdata):
  queries = retrieval_eval.read_queries(str(realdata / 'msrvtt' / 'MSRVTT_JSFUSION_test.csv'))
  assert len(queries) == 1000 and len({q['target'] for q in queries}) == 1000
  assert queries[0] == {'query_id': 'ret0', 'text': 'a person is connecting something to system',
                        'target': 'video9770'}
  segments = retrieval_eval.read_queries(
      str(realdata / 'youcook2' / 'youcookii_annotations_trainval.json'), 'validation')
  assert len({s['target'] for s in segments}) == len(segments) > 3000
  assert all(s['target'].rsplit('_', 1)[1].isdigit() for s in segments)


def test_video_qa_binary(tmp_path):
  lines = [
      {'qid': 'mc0', 'clip_name': 'vA', 'answer': '1', 'options': ['x', 'y', 'z']},
      {'qid': 'mc1', 'clip_name': 'vB', 'answer': 0, 'options': ['x', 'y', 'z']},
      {'qid': 'mc2', 'clip_name': 'vGone', 'answer': '2', 'options': ['x', 'y', 'z']},
  ]
  (tmp_path / 'mc.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
  embeddings = _texts(tmp_path, {'x': [1, 0], 'y': [0, 1], 'z': [0.5, 0.5]})
  # vA prefers y (right), vB prefers y too (wrong: answer x); vGone has no file.
  features = _videos(tmp_path / 'features', {'vA': [0.1, 1.0], 'vB': [0.2, 0.9]})
  _eval('video-qa', '--annotations', tmp_path / 'mc.jsonl', '--features', features,
        '--text_embeddings', embeddings, '--output', tmp_path / 'm.json')
  result = json.loads((tmp_path / 'm.json').read_text())
  assert result['metrics'] == {'accuracy': 0.5, 'chance': pytest.approx(1 / 3), 'count': 2}
  assert result['missing_videos'] == [{'video_id': 'vGone', 'reason': 'missing'}]
  assert result['predictions'] == {'mc0': 1, 'mc1': 1}
  # A JSON list reads the same.
  (tmp_path / 'mc.json').write_text(json.dumps(lines))
  assert video_qa.read_questions(str(tmp_path / 'mc.json')) == video_qa.read_questions(
      str(tmp_path / 'mc.jsonl'))


def test_video_qa_reads_real_file(realdata):
  questions = video_qa.read_questions(str(realdata / 'msrvtt' / 'msrvtt_mc_test.jsonl'))
  assert len(questions) == 2990
  assert all(len(q['options']) == 5 for q in questions)
  assert questions[1]['video_id'] == 'video9771' and questions[1]['answer'] == 2


def test_action_segmentation_binary(tmp_path):
  database = {
      'vX': {'subset': 'testing', 'annotation': [
          {'id': '1', 'segment': [0.0, 1.5], 'label': 'cut onion'},
          {'id': '3', 'segment': [3.0, 4.0], 'label': 'pour water'}]},
      'vY': {'subset': 'testing', 'annotation': []},
      'vT': {'subset': 'training', 'annotation': [
          {'id': '2', 'segment': [1.0, 2.0], 'label': 'stir'}]},
  }
  (tmp_path / 'coin.json').write_text(json.dumps({'database': database}))
  _eval('action-segmentation', '--annotations', tmp_path / 'coin.json', '--label_set', 'all',
        '--write_texts', tmp_path / 'labels.txt')
  # --label_set all: all subsets, by id: the training-only step is a label too.
  assert (tmp_path / 'labels.txt').read_text() == 'cut onion\nstir\npour water\n'
  embeddings = _texts(tmp_path, {'cut onion': [1, 0], 'stir': [0, 1], 'pour water': [0.5, 0.75]})
  # gamma = 0.75; predictions 1, 2, background, 3 vs ground truth 1, 1, 0, 3.
  features = _videos(tmp_path / 'features', {'vX': [[2, 0], [0, 1], [0.5, 0.5], [1, 1]]})
  _eval('action-segmentation', '--annotations', tmp_path / 'coin.json', '--features', features,
        '--text_embeddings', embeddings, '--output', tmp_path / 'm.json', '--label_set', 'all')
  result = json.loads((tmp_path / 'm.json').read_text())
  assert result['metrics'] == dict(frame_accuracy=0.75, background_baseline_accuracy=0.25,
                                   seconds=4, labelled_fraction_predicted=0.75, videos=1)
  assert result['parameters']['gamma'] == 0.75
  assert result['missing_videos'] == [{'video_id': 'vY', 'reason': 'missing'}]


def test_coin_labels_default_to_mmpts_testing_list(tmp_path):
  # MMPT: label i is the testing subset's step id i; a training-only step is no label.
  database = {
      'vX': {'subset': 'testing', 'annotation': [
          {'id': '2', 'segment': [0.0, 1.0], 'label': 'pour water'},
          {'id': '1', 'segment': [1.0, 2.0], 'label': 'cut onion'}]},
      'vT': {'subset': 'training', 'annotation': [
          {'id': '3', 'segment': [1.0, 2.0], 'label': 'stir'}]},
  }
  path = tmp_path / 'coin.json'
  path.write_text(json.dumps({'database': database}))
  labels, videos = action_segmentation.read_coin(str(path), 'testing')
  assert labels == ['cut onion', 'pour water']
  assert videos == {'vX': [(0.0, 1.0, 2), (1.0, 2.0, 1)]}
  # Testing ids that are not 1..N have no place in MMPT's list.
  database['vX']['annotation'][0]['id'] = '4'
  path.write_text(json.dumps({'database': database}))
  with pytest.raises(ValueError, match='not 1..2'):
    action_segmentation.read_coin(str(path), 'testing')
  assert action_segmentation.read_coin(str(path), 'testing', label_set='all')[0] == [
      'cut onion', 'stir', 'pour water']


def _crosstask_csv(path, rows):
  path.write_text(''.join(f'{task},{vid},https://youtu.be/{vid}\n' for task, vid in rows))
  return str(path)


def test_crosstask_default_split_is_mmpts(tmp_path):
  annotations, features = tmp_path / 'annotations', tmp_path / 'features'
  annotations.mkdir()
  features.mkdir()
  primary = ['100'] * 6 + ['300'] * 2 + ['100', '100'] + ['200'] * 4
  vids = [f'v{i}' for i in range(len(primary))]
  for task, vid in zip(primary, vids):
    if vid != 'v5':  # v5 has no features: MMPT drops it before the draw
      np.save(features / f'{vid}.npy', np.zeros((4, 2), np.float32))
    (annotations / f'{task}_{vid}.csv').write_text('1,0.0,1.0\n')
  all_videos = _crosstask_csv(tmp_path / 'videos.csv', zip(primary, vids))
  val_videos = _crosstask_csv(tmp_path / 'videos_val.csv', [('100', 'v1')])
  pairs = step_localization.mmpt_videos(all_videos, val_videos, {'100', '300'}, str(annotations),
                                        str(features), n_train=2)
  # Task 100 (file order): v0 v2 v3 v4 v8 v9 remain (v1 is val, v5 has no features);
  # 2 of them go to training, drawn first by np.random.seed(0); task 300 has only 2 videos
  # (not more than n_train): all training; 200 is not primary.
  remaining = ['v0', 'v2', 'v3', 'v4', 'v8', 'v9']
  np.random.seed(0)
  held_out = set(np.random.choice(remaining, 2, replace=False).tolist())
  assert pairs == [('100', v) for v in remaining if v not in held_out]
  assert len(pairs) == 4


def test_step_localization_binary(tmp_path):
  (tmp_path / 'tasks.txt').write_text(
      '100\nMake eggs\nhttp://a\n2\ncrack egg,whisk egg\n\n'
      '200\nMake soup\nhttp://b\n3\nadd salt,stir,taste\n\n')
  annotations = tmp_path / 'annotations'
  annotations.mkdir()
  (annotations / '100_vidA.csv').write_text('1,0.0,1.0\n2,3.0,4.0\n')
  (annotations / '200_vid_B.csv').write_text('1,1.0,2.0\n2,2.0,3.0\n3,0.0,1.0\n')
  (annotations / '200_vidC.csv').write_text('1,1.0,2.0\n')
  _eval('step-localization', '--tasks', tmp_path / 'tasks.txt', '--annotations', annotations,
        '--write_texts', tmp_path / 'steps.txt')
  assert (tmp_path / 'steps.txt').read_text().splitlines() == [
      'crack egg', 'whisk egg', 'add salt', 'stir', 'taste']
  embeddings = _texts(tmp_path, {'crack egg': [1, 0, 0], 'whisk egg': [0, 1, 0],
                                 'add salt': [1, 0, 0], 'stir': [0, 1, 0], 'taste': [0, 0, 1]})
  features = _videos(tmp_path / 'features', {
      # Steps decode to seconds 0 and 2: crack matches (second 0), whisk (3..3) does not.
      'vidA': [[3, 0, 0], [0, 0, 0], [0, 3, 0], [0, 0, 0]],
      # Taste scores best at second 0, but the order puts it after add (1) and stir (2):
      # seconds 1, 2, 3 -> add and stir match, taste (annotated at 0) does not.
      'vid_B': [[0, 0, 4], [4, 0, 0], [0, 4, 0], [0, 0, 4], [0, 0, 0]],
  })
  _eval('step-localization', '--tasks', tmp_path / 'tasks.txt', '--annotations', annotations,
        '--features', features, '--text_embeddings', embeddings, '--output', tmp_path / 'm.json',
        '--split', 'annotations')
  result = json.loads((tmp_path / 'm.json').read_text())
  assert result['metrics']['per_task'] == {'100': 0.5, '200': pytest.approx(2 / 3)}
  assert result['metrics']['recall'] == pytest.approx(7 / 12)
  assert result['skipped_videos'] == [{'task': '200', 'video_id': 'vidC', 'reason': 'missing'}]
  assert result['counts']['annotated_steps'] == {'100': 2, '200': 3}


def test_moment_ranking_binary(tmp_path):
  queries = [
      {'annotation_id': 1, 'video': 'vA.mov', 'description': 'q one',
       'times': [[2, 2], [2, 2], [2, 2], [1, 2]]},
      {'annotation_id': 2, 'video': 'vA.mov', 'description': 'q two',
       'times': [[4, 4], [5, 5], [0, 0], [0, 1]]},
      {'annotation_id': 3, 'video': 'vGone.mp4', 'description': 'q one', 'times': [[0, 0]]},
  ]
  (tmp_path / 'didemo.json').write_text(json.dumps(queries))
  states = np.tile([1.0, 0.0], (30, 1))
  states[10:15] = [0.0, 1.0]  # chunk 2
  features = _videos(tmp_path / 'features', {'vA': states})  # found as vA.npy
  embeddings = _texts(tmp_path, {'q one': [0, 1], 'q two': [1, 0]})
  _eval('moment-ranking', '--annotations', tmp_path / 'didemo.json', '--features', features,
        '--text_embeddings', embeddings, '--output', tmp_path / 'm.json')
  result = json.loads((tmp_path / 'm.json').read_text())
  # q one: (2, 2) on top -> ranks 1, 1, 1 and IoUs 1, 1, 1. q two: nine spans tie at 1.0
  # in candidate order (0,0) (1,1) (3,3) (4,4) (5,5) (0,1) ... -> ranks 4, 5, 1, 6 ->
  # mean of best three 10/3; IoUs of (0,0): 0, 0, 1, 0.5 -> 0.5.
  assert result['metrics'] == {'rank@1': 0.5, 'rank@5': 1.0, 'mIoU': 0.75, 'count': 2}
  assert result['top_moment'] == {'1': [2, 2], '2': [0, 0]}
  assert result['missing_videos'] == [{'video': 'vGone.mp4', 'reason': 'missing'}]


def test_evaluations_run_without_the_cli(tmp_path):
  # The flag-free vlm_jax.evaluate modules work in-process, all in one process, and give
  # what the CLI gives: no absl flags are defined on import, so none can collide.
  for module in pkgutil.iter_modules(evaluate.__path__):
    importlib.import_module(f'{evaluate.__name__}.{module.name}')
  assert not [m for m in flags.FLAGS.flags_by_module_dict() if m.startswith(evaluate.__name__)]
  (tmp_path / 'mc.jsonl').write_text(json.dumps(
      {'clip_name': 'v', 'answer': 0, 'options': ['a b', 'c']}) + '\n')
  _embeddings.write_texts(str(tmp_path / 't.txt'), video_qa.texts_to_encode(
      str(tmp_path / 'mc.jsonl')))
  assert (tmp_path / 't.txt').read_text() == 'a b\nc\n'
  _eval('video-qa', '--annotations', tmp_path / 'mc.jsonl', '--write_texts', tmp_path / 'u.txt')
  assert (tmp_path / 'u.txt').read_text() == 'a b\nc\n'
  embeddings = _texts(tmp_path, {'a b': [1, 0], 'c': [0, 1]})
  features = _videos(tmp_path / 'features', {'v': [2, 1]})
  result = video_qa.run(str(tmp_path / 'mc.jsonl'), str(features), str(embeddings),
                        str(tmp_path / 'm.json'))
  assert result['metrics'] == {'accuracy': 1.0, 'chance': 0.5, 'count': 1}
  assert json.loads((tmp_path / 'm.json').read_text()) == result


def test_bad_feature_files_are_reported(tmp_path):
  np.save(tmp_path / 'seq.npy', np.zeros((3, 4), np.float32))
  np.save(tmp_path / 'row.npy', np.ones((1, 4), np.float32))
  np.save(tmp_path / 'nan.npy', np.full(4, np.nan, np.float32))
  (tmp_path / 'junk.npy').write_bytes(b'not numpy')
  assert _embeddings.load_video(str(tmp_path), 'seq', per_second=False)[1] == (
      'expected a pooled embedding [D], got shape [3, 4]')
  assert _embeddings.load_video(str(tmp_path), 'row', per_second=False)[0].shape == (4,)
  assert _embeddings.load_video(str(tmp_path), 'row', per_second=True, dim=5)[1] == (
      'D = 4, but the text embeddings have D = 5')
  assert _embeddings.load_video(str(tmp_path), 'nan', per_second=False)[1] == 'non-finite values'
  assert _embeddings.load_video(str(tmp_path), 'junk', per_second=False)[1].startswith('unreadable')
