"""A YouCook2-style corpus as a tensorflow-datasets builder: VideoBERT examples.

Each example is one video: its visual tokens (codebook leaves of its S3D clip
features) with clip times, and its annotated segments as WordPiece sentences
with their [start, end] seconds; the fields of `vlm_jax.data.records`.
Splits follow the annotation file's `subset` (training -> train, validation
-> validation, testing -> test; another value -> train); a video with no
annotation gives a video-only example in train, as make-records gives a
video-only record.

  tfds build vlm_jax/datasets/youcook2_style.py --config demo \\
      --manual_dir ~/youcook2_manual --data_dir ~/tensorflow_datasets
  tfds.load('youcook2_style/demo', split='train', data_dir='~/tensorflow_datasets')
  # (to prepare from Python: `import vlm_jax.datasets` first, and pass the manual_dir
  # in download_and_prepare_kwargs; a prepared copy loads without the import)
  vlm-jax train --config configs/videobert.py:base \\
      --config.data.train_files='tfds:youcook2_style/demo?split=train&data_dir=...'

`python -m vlm_jax.datasets.build` takes the same arguments where the `tfds`
script cannot start (it needs apache-beam and mlcroissant). The module
imports only absolutely, so `tfds build` can load it as a file.
"""

import json
import os

import tensorflow_datasets as tfds

from vlm_jax.data import transcripts as transcripts_lib
from vlm_jax.datasets import corpus

ANNOTATIONS = 'youcookii_annotations_trainval.json'
# YouCook2's `subset` values -> tfds split names.
SPLITS = {'training': 'train', 'validation': 'validation', 'testing': 'test'}


class Youcook2Style(corpus.Builder):
  """YouCook2-style videos + annotated segments -> VideoBERT examples."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = corpus.builder_configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put into manual_dir:
  {ANNOTATIONS}   YouCook2's annotation file
                  ({{"database": {{video_id: {{"subset", "annotations": [{{"segment", "sentence"}}]}}}}}})
{corpus.LAYOUT}
Videos without annotations become video-only examples of the train split.
"""

  def _info(self) -> tfds.core.DatasetInfo:
    # Not `dataset_info_from_configs`: it reads metadata files from the
    # builder's package, which `tfds build` may have imported as a plain module.
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split('\n\n')[1],
        features=corpus.features_spec(),
        homepage='http://youcook2.eecs.umich.edu/',
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    annotations = os.path.join(manual_dir, ANNOTATIONS)
    if not os.path.exists(annotations):
      raise FileNotFoundError(f'no {annotations}.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    report = corpus.Report()
    joiner = corpus.make_joiner(manual_dir, corpus.cache_root(dl_manager, self.name),
                                self.builder_config, report)
    ids = corpus.video_ids(joiner.features)
    sentences = transcripts_lib.read_youcook2(annotations, lenient=self.builder_config.lenient,
                                              failures=report.transcript_failures)
    with open(annotations, encoding='utf-8-sig') as f:
      database = json.load(f)['database']
    split_of = {video_id: SPLITS.get(database[video_id].get('subset'), 'train')
                for video_id in sentences}
    report.counts['transcripts_without_videos'] = len(set(sentences) - set(ids))
    by_split: dict[str, list[str]] = {}
    for video_id in ids:
      by_split.setdefault(split_of.get(video_id, 'train'), []).append(video_id)
    last = sorted(by_split)[-1] if by_split else None
    return {split: self._generate_examples(joiner, split_ids, sentences, report,
                                           split == last)
            for split, split_ids in sorted(by_split.items())}

  def _generate_examples(self, joiner, ids, sentences, report, last):
    yield from joiner.examples(ids, sentences)
    # The split generators run one after the other: after the last one the
    # report holds the whole build.
    if last:
      corpus.finish(report, self.info.metadata)
