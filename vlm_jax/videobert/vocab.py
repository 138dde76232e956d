"""The joint VideoBERT vocabulary: WordPieces, then `[>]`, then visual tokens.

Layout of ids (one embedding table row each):

  [0, text_vocab_size)                 BERT WordPieces, including its specials
                                       ([PAD], [UNK], [CLS], [SEP], [MASK])
  text_vocab_size                      `[>]`, the token joining text and video
  [visual_offset, size)                visual tokens (leaf clusters of the codebook)
"""

import dataclasses

from vlm_jax.data import tokenizer as tokenizer_lib


@dataclasses.dataclass(frozen=True)
class JointVocab:
  text_vocab_size: int
  num_visual_tokens: int
  pad_id: int = 0
  unk_id: int = 100
  cls_id: int = 101
  sep_id: int = 102
  mask_id: int = 103

  @property
  def video_sep_id(self) -> int:
    """Id of `[>]`."""
    return self.text_vocab_size

  @property
  def visual_offset(self) -> int:
    return self.text_vocab_size + 1

  @property
  def size(self) -> int:
    return self.visual_offset + self.num_visual_tokens

  @property
  def special_ids(self) -> tuple[int, ...]:
    """Ids that are never masked."""
    return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id,
            self.video_sep_id)

  def visual_id(self, cluster):
    """Joint id of a visual cluster index (works on ints and arrays)."""
    return cluster + self.visual_offset


def from_tokenizer(tokenizer, num_visual_tokens: int) -> JointVocab:
  """The joint vocabulary with the special ids read from a WordPiece tokenizer's vocab."""
  ids = tokenizer_lib.special_ids(tokenizer)
  return JointVocab(
      text_vocab_size=tokenizer.get_vocab_size(), num_visual_tokens=num_visual_tokens,
      pad_id=ids['[PAD]'], unk_id=ids['[UNK]'], cls_id=ids['[CLS]'],
      sep_id=ids['[SEP]'], mask_id=ids['[MASK]'])
