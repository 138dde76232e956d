"""tensorflow-datasets builders of VideoBERT corpora (importing registers them).

  youcook2_style   YouCook2-style videos + annotated segments
  howto100m_style  HowTo100M-style videos + ASR captions
"""

from vlm_jax.datasets import howto100m_style  # pylint: disable=unused-import
from vlm_jax.datasets import youcook2_style  # pylint: disable=unused-import
