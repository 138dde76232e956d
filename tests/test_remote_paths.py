"""`vlm-jax train` with its workdir and training files on Cloud Storage (gs://).

There is no Cloud Storage here, so the test serves a small in-memory stand-in
of the GCS JSON API on localhost, and every client the trainer uses really
talks to it over HTTP:

  * TensorFlow's own gs:// filesystem (tf.io.gfile, tf.data TFRecord reads,
    TensorBoard events, the tf.train.Checkpoint of the data iterator, and
    etils.epath, which Orbax uses for its directories and metadata): its
    endpoints are fixed https://*.googleapis.com URLs, so it reaches the
    stand-in through an HTTPS proxy (`https_proxy`) that answers CONNECT with
    TLS under a certificate made for the test (`CURL_CA_BUNDLE`);
  * TensorStore, which writes and reads Orbax's array data
    (`TENSORSTORE_GCS_HTTP_URL`);
  * google-cloud-storage, which Orbax 0.12.8 asks whether a gs:// bucket has a
    hierarchical namespace before it lists checkpoint steps
    (`STORAGE_EMULATOR_HOST`).

All three authenticate with `GOOGLE_AUTH_TOKEN_FOR_TESTING` or anonymously.
Nothing is written to the local disk under the workdir's name: the test checks
that the store holds the run's files.
"""

import datetime
import http.server
import json
import os
import socketserver
import ssl
import subprocess
import sys
import threading
import urllib.parse

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = 'vlm-jax-test'
_UPDATED = '2024-01-01T00:00:00.000Z'


class FakeGcs:
  """Objects of the buckets: name -> (bytes, generation), under one lock."""

  def __init__(self):
    self.objects: dict[tuple[str, str], tuple[bytes, int]] = {}
    self.uploads: dict[str, tuple[str, str]] = {}  # resumable upload id -> (bucket, name)
    self.lock = threading.Lock()
    self._generation = 0

  def next_generation(self) -> int:
    self._generation += 1
    return self._generation

  def names(self, bucket: str) -> list[str]:
    with self.lock:
      return sorted(n for b, n in self.objects if b == bucket)


def _resource(bucket: str, name: str, data: bytes, generation: int) -> dict:
  return {'kind': 'storage#object', 'bucket': bucket, 'name': name, 'size': str(len(data)),
          'generation': str(generation), 'metageneration': '1', 'updated': _UPDATED,
          'timeCreated': _UPDATED, 'contentType': 'application/octet-stream'}


def _handler_class(store: FakeGcs, tls_context: ssl.SSLContext):
  """A request handler bound to `store`; CONNECT turns the socket into TLS."""

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    # Headers and body go out in two writes: without this, Nagle's algorithm
    # and the client's delayed ACK hold each response back by ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # pylint: disable=arguments-differ
      pass

    # --- Plumbing.

    def _body(self) -> bytes:
      if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
        data = b''
        while True:
          size = int(self.rfile.readline().split(b';')[0], 16)
          chunk = self.rfile.read(size + 2)[:size]
          if not size:
            return data
          data += chunk
      return self.rfile.read(int(self.headers.get('Content-Length') or 0))

    def _send(self, code: int, body=b'', headers=None):
      if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers = {'Content-Type': 'application/json', **(headers or {})}
      self.send_response(code)
      for key, value in (headers or {}).items():
        self.send_header(key, value)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      if self.command != 'HEAD':
        self.wfile.write(body)

    def _error(self, code: int):
      self._send(code, {'error': {'code': code, 'message': http.HTTPStatus(code).phrase}})

    def do_CONNECT(self):  # pylint: disable=invalid-name
      """The HTTPS proxy: TLS with the test's certificate, then plain requests."""
      self.send_response(200, 'Connection established')
      self.end_headers()
      self.wfile.flush()
      self.connection = tls_context.wrap_socket(self.connection, server_side=True)
      self.rfile = self.connection.makefile('rb')
      self.wfile = socketserver._SocketWriter(self.connection)  # pylint: disable=protected-access
      self.close_connection = False

    # --- The API.

    def _route(self):
      url = urllib.parse.urlsplit(self.path)
      query = dict(urllib.parse.parse_qsl(url.query))
      parts = url.path.split('/')[1:]
      return parts, query

    def _preconditions_fail(self, key, query) -> int | None:
      current = store.objects.get(key)
      generation = current[1] if current else 0
      if 'ifGenerationMatch' in query and int(query['ifGenerationMatch']) != generation:
        return 412
      if 'ifGenerationNotMatch' in query and int(query['ifGenerationNotMatch']) == generation:
        return 304
      return None

    def _media(self, key, query):
      with store.lock:
        if key not in store.objects:
          return self._error(404)
        failed = self._preconditions_fail(key, query)
        if failed:
          return self._send(failed, headers={'x-goog-generation': str(store.objects[key][1])})
        data, generation = store.objects[key]
      headers = {'x-goog-generation': str(generation), 'x-goog-metageneration': '1',
                 'Content-Type': 'application/octet-stream'}
      ranged = self.headers.get('Range')
      if not ranged or not data:
        return self._send(200, data, headers)
      first, _, last = ranged.split('=', 1)[1].partition('-')
      if not first:  # bytes=-N: the last N bytes
        first, last = max(len(data) - int(last), 0), len(data) - 1
      else:
        first, last = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
      if first >= len(data) and data:
        return self._send(416, b'', {'Content-Range': f'bytes */{len(data)}'})
      headers['Content-Range'] = f'bytes {first}-{last}/{len(data)}'
      return self._send(206, data[first:last + 1], headers)

    def _store(self, bucket, name, data, query):
      key = (bucket, name)
      with store.lock:
        failed = self._preconditions_fail(key, query)
        if failed:
          return self._error(412)
        generation = store.next_generation()
        store.objects[key] = (data, generation)
      return self._send(200, _resource(bucket, name, data, generation))

    def _list(self, bucket, query):
      prefix, delimiter = query.get('prefix', ''), query.get('delimiter')
      items, prefixes = [], set()
      with store.lock:
        for (b, name), (data, generation) in sorted(store.objects.items()):
          if b != bucket or not name.startswith(prefix):
            continue
          rest = name[len(prefix):]
          if delimiter and delimiter in rest:
            prefixes.add(prefix + rest.split(delimiter)[0] + delimiter)
          else:
            items.append(_resource(b, name, data, generation))
      page = {'kind': 'storage#objects', 'items': items}
      if prefixes:
        page['prefixes'] = sorted(prefixes)
      return self._send(200, page)

    def _xml_media(self, parts):
      """storage.googleapis.com/BUCKET/OBJECT: how TensorFlow downloads."""
      bucket, name = parts[0], urllib.parse.unquote('/'.join(parts[1:]))
      return self._media((bucket, name), {})

    def do_GET(self):  # pylint: disable=invalid-name
      parts, query = self._route()
      if parts[:3] != ['storage', 'v1', 'b']:
        return self._xml_media(parts)
      bucket = parts[3]
      if len(parts) == 4:
        return self._send(200, {'kind': 'storage#bucket', 'name': bucket, 'id': bucket,
                                'location': 'US', 'storageClass': 'STANDARD'})
      if len(parts) == 5 and parts[4] == 'o':
        return self._list(bucket, query)
      key = (bucket, urllib.parse.unquote('/'.join(parts[5:])))
      if query.get('alt') == 'media':
        return self._media(key, query)
      with store.lock:
        if key not in store.objects:
          return self._error(404)
        failed = self._preconditions_fail(key, query)
        if failed:
          return self._error(failed)
        resource = _resource(*key, *store.objects[key])
      return self._send(200, resource)

    def do_HEAD(self):  # pylint: disable=invalid-name
      return self.do_GET()

    def do_DELETE(self):  # pylint: disable=invalid-name
      parts, query = self._route()
      key = (parts[3], urllib.parse.unquote('/'.join(parts[5:])))
      with store.lock:
        if key not in store.objects:
          return self._error(404)
        if self._preconditions_fail(key, query):
          return self._error(412)
        del store.objects[key]
      return self._send(204)

    def do_POST(self):  # pylint: disable=invalid-name
      parts, query = self._route()
      body = self._body()
      if parts[:4] == ['upload', 'storage', 'v1', 'b']:
        bucket = parts[4]
        kind = query.get('uploadType')
        if kind == 'media':
          return self._store(bucket, query['name'], body, query)
        if kind == 'resumable':
          name = query.get('name') or json.loads(body or b'{}')['name']
          with store.lock:
            upload_id = str(store.next_generation())
            store.uploads[upload_id] = (bucket, name)
          host = self.headers.get('Host', 'www.googleapis.com')
          scheme = 'https' if isinstance(self.connection, ssl.SSLSocket) else 'http'
          location = (f'{scheme}://{host}/upload/storage/v1/b/{bucket}/o?uploadType=resumable'
                      f'&upload_id={upload_id}')
          return self._send(200, b'', {'Location': location})
        if kind == 'multipart':
          boundary = self.headers['Content-Type'].split('boundary=')[1].strip('"').encode()
          sections = [s for s in body.split(b'--' + boundary) if s.strip(b'-\r\n')]
          metadata = json.loads(sections[0].split(b'\r\n\r\n', 1)[1])
          data = sections[1].split(b'\r\n\r\n', 1)[1][:-2]
          return self._store(bucket, metadata['name'], data, query)
        return self._error(400)
      # .../o/SRC/rewriteTo/b/BUCKET/o/DST (and copyTo): TensorFlow's rename.
      bucket, tail = parts[3], '/'.join(parts[5:])
      source, _, target = tail.partition('/rewriteTo/b/') if '/rewriteTo/' in tail else (
          tail.partition('/copyTo/b/'))
      target_bucket, _, target_name = target.partition('/o/')
      with store.lock:
        key = (bucket, urllib.parse.unquote(source))
        if key not in store.objects:
          return self._error(404)
        data = store.objects[key][0]
        generation = store.next_generation()
        name = urllib.parse.unquote(target_name)
        store.objects[(target_bucket, name)] = (data, generation)
      resource = _resource(target_bucket, name, data, generation)
      if '/rewriteTo/' in tail:
        return self._send(200, {'kind': 'storage#rewriteResponse', 'done': True,
                                'totalBytesRewritten': str(len(data)),
                                'objectSize': str(len(data)), 'resource': resource})
      return self._send(200, resource)

    def do_PUT(self):  # pylint: disable=invalid-name
      """The one request of a resumable upload (clients here send it whole)."""
      _, query = self._route()
      body = self._body()
      with store.lock:
        bucket, name = store.uploads.pop(query['upload_id'])
      return self._store(bucket, name, body, query)

  return Handler


def _certificate(directory: str) -> tuple[str, str]:
  """A self-signed certificate for the googleapis.com hosts: (cert.pem, key.pem)."""
  from cryptography import x509  # pylint: disable=import-outside-toplevel
  from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
  from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
  from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel
  key = ec.generate_private_key(ec.SECP256R1())
  name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'fake googleapis')])
  now = datetime.datetime.now(datetime.timezone.utc)
  cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.SubjectAlternativeName(
              [x509.DNSName('www.googleapis.com'), x509.DNSName('storage.googleapis.com'),
               x509.DNSName('oauth2.googleapis.com')]), critical=False)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
  cert_path, key_path = os.path.join(directory, 'cert.pem'), os.path.join(directory, 'key.pem')
  with open(cert_path, 'wb') as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
  with open(key_path, 'wb') as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
  return cert_path, key_path


@pytest.fixture(scope='module')
def fake_gcs(tmp_path_factory):
  """(store, environment) of a stand-in GCS server running in a thread."""
  pytest.importorskip('cryptography', reason='makes the stand-in server certificate')
  directory = str(tmp_path_factory.mktemp('fake_gcs'))
  cert_path, key_path = _certificate(directory)
  tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  tls.load_cert_chain(cert_path, key_path)
  store = FakeGcs()
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler_class(store, tls))
  server.daemon_threads = True
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  address = f'http://127.0.0.1:{server.server_address[1]}'
  env = {
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'fake-token',  # TensorFlow and TensorStore
      'https_proxy': address,  # TensorFlow's fixed https://*.googleapis.com endpoints
      'CURL_CA_BUNDLE': cert_path,
      'no_proxy': '127.0.0.1,localhost',
      'TENSORSTORE_GCS_HTTP_URL': address,
      'STORAGE_EMULATOR_HOST': address,  # google-cloud-storage
      # This process and the CLI's write the same objects in turn: TensorFlow's
      # caches of sizes and globs would hand this one stale answers.
      'GCS_STAT_CACHE_MAX_AGE': '0',
      'GCS_MATCHING_PATHS_CACHE_MAX_AGE': '0',
  }
  yield store, env
  server.shutdown()


def _config(**train):
  from configs import videobert as videobert_config  # pylint: disable=import-outside-toplevel
  config = videobert_config.get_config('tiny,runlocal')
  config.train.global_batch_size = 8
  config.data.synthetic_videos = 32
  config.optim.warmup_steps = 1
  for key, value in train.items():
    config.train[key] = value
  return config


def _params(checkpoint_dir: str, step: int):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return ocp.StandardCheckpointer().restore(
      os.path.join(checkpoint_dir, str(step), 'default'))['params']


def test_train_and_resume_with_workdir_and_data_on_gcs(fake_gcs, tmp_path, monkeypatch):
  """A run on gs:// stops, the CLI resumes it from gs://, and it ends as a local run does."""
  pytest.importorskip('google.cloud.storage',
                      reason='Orbax lists gs:// checkpoints through google-cloud-storage')
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from vlm_jax.train import report  # pylint: disable=import-outside-toplevel
  from vlm_jax.videobert import step as step_lib  # pylint: disable=import-outside-toplevel
  from vlm_jax.videobert import trainer  # pylint: disable=import-outside-toplevel
  store, env = fake_gcs
  for key, value in env.items():
    monkeypatch.setenv(key, value)

  # The training files: the synthetic corpus, copied to the bucket.
  config = _config(num_steps=4, checkpoint_every=2, log_every=2)
  local_files = trainer.training_files(config, step_lib.load_vocab(config)[0])
  data = f'gs://{BUCKET}/tokens'
  tf.io.gfile.makedirs(data)
  for path in local_files:
    tf.io.gfile.copy(path, f'{data}/{os.path.basename(path)}', overwrite=True)
  config.data.train_files = f'{data}/*.tfrecord'
  workdir = f'gs://{BUCKET}/runs/vb'

  # 1. Steps 1-2 in this process, everything written to the bucket.
  trainer.train(config, workdir, stop_at=2)
  names = set(store.names(BUCKET))
  for name in ('metrics.jsonl', 'config.json', 'manifest.json', 'curves.png',
               'checkpoints/2/_CHECKPOINT_METADATA', 'checkpoints/2/default/manifest.ocdbt',
               'data_state/step_2/process_0.index'):
    assert f'runs/vb/{name}' in names, name
  assert any(n.startswith('runs/vb/tensorboard/events.out.tfevents') for n in names)
  with tf.io.gfile.GFile(f'{workdir}/curves.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  manifest = json.loads(tf.io.gfile.GFile(f'{workdir}/manifest.json').read())
  assert manifest['workdir'] == workdir and manifest['checkpoint_steps'] == [2]
  assert manifest['data_files'] == sorted(f'{data}/{os.path.basename(p)}' for p in local_files)

  # 2. The command line resumes from the bucket at step 2 and finishes, keeping
  # one checkpoint (and so deleting the older data state on the bucket).
  command = [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
             os.path.join(REPO, 'configs', 'videobert.py') + ':tiny,runlocal', '--workdir', workdir,
             '--config.train.global_batch_size=8', '--config.data.synthetic_videos=32',
             '--config.optim.warmup_steps=1',
             '--config.train.num_steps=4', '--config.train.checkpoint_every=2',
             '--config.train.log_every=2', '--config.train.keep_checkpoints=1',
             f'--config.data.train_files={data}/*.tfrecord']
  resumed = subprocess.run(command, cwd=tmp_path, env={**os.environ, 'PYTHONPATH': REPO},
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resumed from the checkpoint at step 2' in resumed.stdout + resumed.stderr
  manifest = json.loads(tf.io.gfile.GFile(f'{workdir}/manifest.json').read())
  assert manifest['resumed_from_step'] == 2 and manifest['final_step'] == 4
  assert [r['step'] for r in report.read_metrics(f'{workdir}/metrics.jsonl')] == [2, 4]
  assert manifest['checkpoint_steps'] == [4]
  assert tf.io.gfile.listdir(f'{workdir}/data_state') == ['step_4/']
  assert not any(n.startswith('runs/vb/checkpoints/2/') for n in store.names(BUCKET))
  assert os.listdir(tmp_path) == []  # no local 'gs:' directory from a URL taken as a path

  # 3. The same 4 steps on the local disk, in one go, end with the same weights.
  local = str(tmp_path / 'straight')
  config.data.train_files = ','.join(local_files)
  trainer.train(config, local)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(_params(f'{workdir}/checkpoints', 4)),
                          jax.tree.leaves(_params(os.path.join(local, 'checkpoints'), 4))):
    np.testing.assert_allclose(x, y, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_captioner_trains_and_loads_on_gcs(fake_gcs, tmp_path, monkeypatch):
  """The captioner's workdir on gs://: its files on the bucket, and the same model as locally."""
  pytest.importorskip('google.cloud.storage',
                      reason='Orbax lists gs:// checkpoints through google-cloud-storage')
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from configs import captioner as captioner_config  # pylint: disable=import-outside-toplevel
  from vlm_jax.captioning import train as captioner  # pylint: disable=import-outside-toplevel
  store, env = fake_gcs
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  monkeypatch.chdir(tmp_path)  # where a URL taken as a local path would make 'gs:/'
  config = captioner_config.get_config('runlocal')
  config.train.num_steps, config.train.batch_size = 20, 8
  config.train.log_every, config.train.checkpoint_every = 10, 10
  sentences = ['slice the tomato', 'stir the soup in the pot', 'peel the onion and chop it',
               'pour the eggs into the pan']
  features = np.random.default_rng(0).normal(size=(4, 24)).astype(np.float32)

  workdir = f'gs://{BUCKET}/runs/captioner'
  captioner.train(config, features, sentences, workdir, progress=False)
  names = set(store.names(BUCKET))
  for name in ('model.json', 'config.json', 'metrics.jsonl', 'manifest.json', 'curves.png',
               'checkpoints/20/_CHECKPOINT_METADATA'):
    assert f'runs/captioner/{name}' in names, name
  local = str(tmp_path / 'captioner')
  captioner.train(config, features, sentences, local, progress=False)
  assert os.listdir(tmp_path) == ['captioner']  # no local 'gs:' directory
  remote, here = captioner.load(workdir), captioner.load(local)
  assert remote.step == here.step == 20
  for x, y in zip(jax.tree.leaves(remote.params), jax.tree.leaves(here.params)):
    np.testing.assert_array_equal(x, y)
  assert captioner.captions(remote, features) == captioner.captions(here, features)


def _upload(local: str, url: str) -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for root, _, names in os.walk(local):
    for name in names:
      path = os.path.join(root, name)
      target = f'{url}/{os.path.relpath(path, local)}'
      tf.io.gfile.makedirs(os.path.dirname(target))
      tf.io.gfile.copy(path, target, overwrite=True)


def _examples(paths) -> list[bytes]:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return sorted(r.numpy() for r in tf.data.TFRecordDataset(sorted(paths)))


def test_front_end_stages_read_and_write_gcs(fake_gcs, tmp_path, monkeypatch):
  """Videos on gs:// to records on gs://, over two processes: the bits of a local run."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from configs import extract_features as extract_config  # pylint: disable=import-outside-toplevel
  from configs import make_records as records_config  # pylint: disable=import-outside-toplevel
  from vlm_jax.data import files  # pylint: disable=import-outside-toplevel
  from vlm_jax.stages import (assign_tokens, build_codebook, encode_video,  # pylint: disable=import-outside-toplevel
                              extract_features, make_records, synth_videos)
  store, env = fake_gcs
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  monkeypatch.chdir(tmp_path)  # where a URL taken as a local path would make 'gs:/'
  synth_videos.run(str(tmp_path / 'corpus'), num_videos=3, num_test=0, num_dev=0)
  corpus = f'gs://{BUCKET}/corpus'
  _upload(str(tmp_path / 'corpus'), corpus)
  config = extract_config.get_config('s3dg')
  config.crop_size, config.clip_frames, config.fps, config.batch_size = 32, 16, 10.0, 4
  config.dtype = 'float32'
  remote, local = f'gs://{BUCKET}/out', str(tmp_path / 'local')

  # The one-process run on the local disk, every stage.
  extract_features.run(str(tmp_path / 'corpus' / 'videos'), f'{local}/features', config,
                       progress=False)
  build_codebook.run(f'{local}/features', f'{local}/codebook.npz', levels=2, k=3,
                     sample_size=40)
  assign_tokens.run(f'{local}/features', f'{local}/codebook.npz', f'{local}/tokens',
                    progress=False)
  records = records_config.get_config('videobert')
  records.num_shards = 2
  make_records.run(f'{local}/features', f'{local}/codebook.npz',
                   str(tmp_path / 'corpus' / 'transcripts'), f'{local}/records', records,
                   progress=False)

  # The same on the bucket, as two processes (then merged); the last stage from the CLI.
  for index in range(2):
    extract_features.run(f'{corpus}/videos', f'{remote}/features', config, progress=False,
                         process_index=index, process_count=2)
  merged = extract_features.merge(f'{corpus}/videos', f'{remote}/features', config)
  assert merged['counts']['done'] == 3 and merged['missing'] == merged['failures'] == []
  assert merged['videos_source'] == f'{corpus}/videos'
  build_codebook.run(f'{remote}/features', f'{remote}/codebook.npz', levels=2, k=3,
                     sample_size=40)
  for index in range(2):
    assign_tokens.run(f'{remote}/features', f'{remote}/codebook.npz', f'{remote}/tokens',
                      index, 2, progress=False)
  assign_tokens.merge(f'{remote}/features', f'{remote}/codebook.npz', f'{remote}/tokens')
  command = [sys.executable, '-m', 'vlm_jax.cli', 'make-records', '--features',
             f'{remote}/features', '--codebook', f'{remote}/codebook.npz', '--transcripts',
             f'{corpus}/transcripts', '--output', f'{remote}/records',
             '--config', os.path.join(REPO, 'configs', 'make_records.py') + ':videobert',
             '--config.num_shards=2']
  cli = subprocess.run(command, cwd=tmp_path, env={**os.environ, 'PYTHONPATH': REPO},
                       capture_output=True, text=True, timeout=300)
  assert cli.returncode == 0, cli.stderr[-3000:]
  assert os.listdir(tmp_path) == ['corpus', 'local']  # nothing under a local 'gs:'

  names = set(store.names(BUCKET))
  for name in ('features/manifest.json', 'features/manifest-00000-of-00002.json',
               'codebook.npz', 'codebook.centroids.npy', 'tokens/manifest.json',
               'records/manifest.json'):
    assert f'out/{name}' in names, name
  assert not any(n.endswith('.tmp') or '.staging-' in n for n in names)
  for folder in ('features', 'tokens'):
    ours = sorted(n for n in tf.io.gfile.listdir(f'{remote}/{folder}') if n.endswith('.npy'))
    assert ours == sorted(n for n in os.listdir(f'{local}/{folder}') if n.endswith('.npy'))
    assert len(ours) == 6 if folder == 'features' else 3
    for name in ours:
      with tf.io.gfile.GFile(f'{remote}/{folder}/{name}', 'rb') as f:
        np.testing.assert_array_equal(np.load(f), np.load(f'{local}/{folder}/{name}'),
                                      err_msg=name)
  with tf.io.gfile.GFile(f'{remote}/codebook.npz', 'rb') as f:
    assert f.read() == open(f'{local}/codebook.npz', 'rb').read()
  manifest = files.read_json(f'{remote}/records/manifest.json')
  assert manifest['counts']['videos'] == 3 and manifest['counts']['with_transcript'] == 3
  assert _examples(manifest['shards']) == _examples(
      files.read_json(f'{local}/records/manifest.json')['shards'])

  # encode-video's inputs: the same items and per-second features from the bucket.
  assert (encode_video.list_items(f'{remote}/features', None)
          == encode_video.list_items(f'{local}/features', None))
  np.testing.assert_array_equal(encode_video.load_per_second(f'{remote}/features', 'train_0001'),
                                encode_video.load_per_second(f'{local}/features', 'train_0001'))
