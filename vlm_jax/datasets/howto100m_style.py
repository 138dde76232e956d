"""A HowTo100M-style corpus as a tensorflow-datasets builder: VideoBERT examples.

Each example is one video: its visual tokens (codebook leaves of its S3D clip
features) with clip times, and its ASR as WordPiece sentences with their
times; the fields of `vlm_jax.data.records`. The ASR is HowTo100M's
`raw_caption.json` ({video_id: {"start", "end", "text"}}) or a `transcripts/`
folder of .vtt / .srt / .json files; unpunctuated captions are split into
sentences at pauses (`max_gap`) and at `max_words` words, as make-records
does. One split, train; a video without captions gives a video-only example.

  tfds build vlm_jax/datasets/howto100m_style.py --config demo \\
      --manual_dir ~/howto100m_manual --data_dir ~/tensorflow_datasets
  tfds.load('howto100m_style/demo', split='train', data_dir='~/tensorflow_datasets')
  # (to prepare from Python: `import vlm_jax.datasets` first, and pass the manual_dir
  # in download_and_prepare_kwargs; a prepared copy loads without the import)

`python -m vlm_jax.datasets.build` takes the same arguments where the `tfds`
script cannot start (it needs apache-beam and mlcroissant). The module
imports only absolutely, so `tfds build` can load it as a file.
"""

import os

import tensorflow_datasets as tfds

from vlm_jax.data import transcripts as transcripts_lib
from vlm_jax.datasets import corpus

CAPTIONS = 'raw_caption.json'
TRANSCRIPTS_DIR = 'transcripts'


def transcript_source(manual_dir: str) -> str | None:
  """`raw_caption.json`, else the `transcripts/` folder, else None (video-only)."""
  for name in (CAPTIONS, TRANSCRIPTS_DIR):
    path = os.path.join(manual_dir, name)
    if os.path.exists(path):
      return path
  return None


class Howto100mStyle(corpus.Builder):
  """HowTo100M-style videos + ASR captions -> VideoBERT examples."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = corpus.builder_configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put into manual_dir:
  {CAPTIONS}      HowTo100M's ASR captions ({{video_id: {{"start", "end", "text"}}}}),
                  or a folder {TRANSCRIPTS_DIR}/ of <video_id>.vtt / .srt files (or such .json)
{corpus.LAYOUT}
Videos without captions become video-only examples.
"""

  def _info(self) -> tfds.core.DatasetInfo:
    # Not `dataset_info_from_configs`: it reads metadata files from the
    # builder's package, which `tfds build` may have imported as a plain module.
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split('\n\n')[1],
        features=corpus.features_spec(),
        homepage='https://www.di.ens.fr/willow/research/howto100m/',
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    report = corpus.Report()
    joiner = corpus.make_joiner(manual_dir, corpus.cache_root(dl_manager, self.name),
                                self.builder_config, report)
    ids = corpus.video_ids(joiner.features)
    source = transcript_source(manual_dir)
    config = self.builder_config
    sentences = (transcripts_lib.load_transcripts(
        source, lenient=config.lenient, max_gap=config.max_gap, max_words=config.max_words,
        failures=report.transcript_failures) if source else {})
    report.counts['transcripts_without_videos'] = len(set(sentences) - set(ids))
    return {'train': self._generate_examples(joiner, ids, sentences, report)}

  def _generate_examples(self, joiner, ids, sentences, report):
    yield from joiner.examples(ids, sentences)
    corpus.finish(report, self.info.metadata)
