"""Video discovery by probing: what FFmpeg reads decides, and every file not used is reported.

The files are made here with PyAV and Pillow (a few KB each): containers
named in the issue (MPEG-TS, VOB, DV, animated GIF/PNG/AVIF) next to audio,
cover art, still images, subtitles and text.
"""

import fractions
import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from vlm_jax.data import files as files_lib
from vlm_jax.data import video as video_lib


def _encode(path, codec, container_format=None, frames=6, size=(32, 24), pix_fmt='yuv420p',
            rate=10, attached_picture=False, audio_codec=None):
  """`frames` frames of a grey ramp through `codec`, and 0.5 s of silence with `audio_codec`."""
  with av.open(str(path), 'w', format=container_format) as container:
    streams = []
    if codec:
      video = container.add_stream(codec, rate=rate)
      video.width, video.height, video.pix_fmt = size[0], size[1], pix_fmt
      if attached_picture:
        video.disposition = av.stream.Disposition.attached_pic
      streams.append((video, [av.VideoFrame.from_ndarray(
          np.full((size[1], size[0], 3), 40 * i % 256, np.uint8), format='rgb24')
                              for i in range(frames)]))
    if audio_codec:
      audio = container.add_stream(audio_codec, rate=8000)
      audio.layout = 'mono'
      silence = av.AudioFrame.from_ndarray(np.zeros((1, 4608), np.float32), format='flt',
                                           layout='mono')
      silence.sample_rate = 8000
      streams.append((audio, [silence]))
    for stream, items in streams:
      for item in items + [None]:
        for packet in stream.encode(item):
          container.mux(packet)


VIDEOS = {'clip', 'broadcast', 'dvd', 'camcorder', 'loop', 'anim', 'recording', 'broken'}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('inputs')
  (root / 'sub').mkdir()
  _encode(root / 'clip.mp4', 'mpeg4')
  _encode(root / 'sub' / 'broadcast.ts', 'mpeg2video', 'mpegts')
  _encode(root / 'dvd.vob', 'mpeg2video', 'vob')
  _encode(root / 'camcorder.dv', 'dvvideo', 'dv', frames=2, size=(720, 480), pix_fmt='yuv411p',
          rate=fractions.Fraction(30000, 1001))
  _encode(root / 'loop.gif', 'gif', 'gif', pix_fmt='rgb8')
  _encode(root / 'anim.png', 'apng', 'apng', pix_fmt='rgb24')
  # A video under a name that says nothing about it.
  _encode(root / 'recording.dat', 'mpeg4', 'matroska')
  _encode(root / 'one_frame.gif', 'gif', 'gif', frames=1, pix_fmt='rgb8')
  _encode(root / 'voice.wav', None, audio_codec='pcm_s16le')
  # MP3 with a cover: FFmpeg shows the picture as a one-frame video stream.
  _encode(root / 'song.mp3', 'mjpeg', frames=1, size=(16, 16), pix_fmt='yuvj420p',
          attached_picture=True, audio_codec='libmp3lame')
  Image.new('RGB', (16, 16), 'red').save(root / 'thumb.jpg')
  (root / 'notes.txt').write_text('ingredients\n' * 50)
  (root / 'clip.vtt').write_text('WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n')
  (root / 'clip.srt').write_text('1\n00:00:01,000 --> 00:00:02,000\nhi\n')
  (root / 'meta.json').write_text('{"fps": 10}')
  (root / 'blob.bin').write_bytes(bytes(range(256)) * 8)
  # Named as a video but unreadable: a broken video, which extraction reports.
  (root / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42 truncated')
  (root / '._clip.mp4').write_bytes(b'\x00\x05\x16\x07')  # macOS resource fork
  (root / '.cache').mkdir()
  _encode(root / '.cache' / 'hidden.mp4', 'mpeg4')
  return root


def test_folder_is_probed_and_every_file_accounted_for(folder):
  listing = files_lib.find_videos(str(folder))
  assert {vid for vid, _ in listing.videos} == VIDEOS
  used = {path for _, path in listing.videos}
  reasons = {os.path.relpath(path, folder): reason for path, reason in listing.not_videos}
  kinds = {name: reason.split(' (')[0] for name, reason in reasons.items()}
  assert kinds == {
      'voice.wav': 'audio only', 'song.mp3': 'audio only, with cover art',
      'thumb.jpg': 'still image, one frame', 'one_frame.gif': 'still image, one frame',
      'clip.vtt': 'subtitles, no video', 'clip.srt': 'subtitles, no video',
      'notes.txt': 'text, no video', 'meta.json': 'unreadable: cannot open video',
      'blob.bin': 'unreadable: cannot open video', '._clip.mp4': 'hidden file',
      '.cache': 'hidden folder, not searched'}
  assert reasons['voice.wav'] == 'audio only (wav)'
  # Every file looked at is used or reported, once.
  looked_at = {os.path.join(root, n) for root, dirs, names in os.walk(folder)
               for n in names + dirs if '.cache' not in root and n != 'sub'}
  assert used | {p for p, _ in listing.not_videos} == looked_at
  assert len(used) + len(listing.not_videos) == len(looked_at)


def test_found_videos_decode_and_the_rest_do_not(folder):
  listing = files_lib.find_videos(str(folder))
  for video_id, path in listing.videos:
    if video_id == 'broken':
      with pytest.raises(video_lib.VideoDecodeError, match='broken.mp4: cannot open'):
        video_lib.decode_frames(path, 10, 16)
    else:
      assert len(video_lib.decode_frames(path, 30, 16)) >= 2, path
  # The decoder reads the stream discovery picked: never the cover art.
  with pytest.raises(video_lib.VideoDecodeError, match='only cover art'):
    video_lib.decode_frames(str(folder / 'song.mp3'), 10, 16)
  with pytest.raises(video_lib.VideoDecodeError, match='text'):
    video_lib.decode_frames(str(folder / 'notes.txt'), 10, 16)


def test_single_files_and_lists(folder, tmp_path):
  clip = str(folder / 'clip.mp4')
  assert files_lib.find_videos(clip).videos == [('clip', clip)]
  with pytest.raises(ValueError, match=r'thumb\.jpg is neither a video \(still image'):
    files_lib.find_videos(str(folder / 'thumb.jpg'))
  # A list is used as written (not probed): a listed file that fails is a failure.
  listing = tmp_path / 'videos.txt'
  listing.write_text(f'# comment\n{folder}/sub/broadcast.ts\n\nmissing.mp4\n{clip}\n')
  assert files_lib.find_videos(str(listing)).videos == [
      ('broadcast', str(folder / 'sub' / 'broadcast.ts')),
      ('missing', str(tmp_path / 'missing.mp4')), ('clip', clip)]
  # Durations after a tab, for sizing the shares without reading headers.
  listing.write_text(f'{folder}/sub/broadcast.ts\t12.5\nmissing.mp4\n{clip}\t 3\n')
  found = files_lib.find_videos(str(listing))
  assert [vid for vid, _ in found.videos] == ['broadcast', 'missing', 'clip']
  assert found.seconds == {str(folder / 'sub' / 'broadcast.ts'): 12.5, clip: 3.0}
  for bad in ('soon', '-1', 'nan'):
    listing.write_text(f'{clip}\n{folder}/sub/broadcast.ts\t{bad}\n')
    with pytest.raises(ValueError, match=rf"videos\.txt:2: the duration .* got '{bad}'"):
      files_lib.find_videos(str(listing))
  listing.write_text(f'{clip}\n{folder}/clip.srt\n')
  with pytest.raises(ValueError, match="'clip'"):
    files_lib.find_videos(str(listing))
  with pytest.raises(FileNotFoundError):
    files_lib.find_videos(str(tmp_path / 'nothing'))


def test_animated_avif(tmp_path):
  if 'libsvtav1' not in av.codecs_available:
    pytest.skip('no AV1 encoder in this FFmpeg')
  path = tmp_path / 'sticker.avif'
  _encode(path, 'libsvtav1', 'avif', frames=4, size=(64, 64))
  # The file holds a one-frame still image before the animation; the animation is read.
  assert video_lib.why_not_video(str(path)) is None
  assert len(video_lib.decode_frames(str(path), 10, 16)) == 4


def test_real_videos_are_found(realdata):
  with open(realdata / 'VIDEO_PROBE.jsonl', encoding='utf-8') as f:
    probed = [json.loads(line)['file'] for line in f if line.startswith('{')]
  assert len(probed) >= 18
  for name in probed:
    assert video_lib.why_not_video(str(realdata / name)) is None, name
  with pytest.raises(video_lib.VideoDecodeError, match='EOFError'):
    video_lib.why_not_video(str(realdata / 'edge_cases' / 'truncated_header_only.mkv'))
  listing = files_lib.find_videos(str(realdata / 'moviepy'))
  assert {os.path.basename(p) for _, p in listing.videos} == {
      os.path.basename(n) for n in probed if n.startswith('./moviepy/')}
  assert {os.path.basename(p): r.split(',')[0] for p, r in listing.not_videos} == {
      'SOURCES.txt': 'text', 'subtitles.srt': 'subtitles', 'subtitles-unicode.srt': 'subtitles'}
