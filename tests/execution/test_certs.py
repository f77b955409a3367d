"""`./run.sh certs`: a CA and certificates that openssl verifies, private keys, no overwriting."""

import os
import stat
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT
from tff_dp.execution import certs


def _openssl(*args: str) -> str:
  return subprocess.run(['openssl', *args],
                        capture_output=True,
                        text=True,
                        check=True).stdout


def test_the_certificates_verify_against_the_ca_with_their_purposes(tmp_path):
  out = tmp_path / 'certs'
  written = certs.make_certs(out_dir=str(out),
                             hosts=['127.0.0.1', 'localhost', 'worker-a.lan'])
  assert sorted(os.listdir(out)) == sorted(certs.ALL_FILES)  # Nothing else.
  assert written == [str(out / name) for name in certs.ALL_FILES]
  ca = str(out / certs.CA_CERT)
  for cert, purpose in ((certs.WORKER_CERT, 'sslserver'), (certs.DRIVER_CERT,
                                                           'sslclient')):
    verified = _openssl('verify', '-CAfile', ca, '-purpose', purpose,
                        str(out / cert))
    assert verified.strip().endswith(': OK'), verified
  # Each certificate's purpose is its own: a driver cannot pose as a worker.
  wrong = subprocess.run([
      'openssl', 'verify', '-CAfile', ca, '-purpose', 'sslserver',
      str(out / certs.DRIVER_CERT)
  ],
                         capture_output=True,
                         text=True,
                         check=False)
  assert wrong.returncode != 0
  text = _openssl('x509', '-in', str(out / certs.WORKER_CERT), '-noout', '-ext',
                  'subjectAltName')
  assert 'IP Address:127.0.0.1' in text and 'DNS:localhost' in text
  assert 'DNS:worker-a.lan' in text


def test_keys_are_private_and_certificates_readable(tmp_path):
  out = tmp_path / 'certs'
  certs.make_certs(out_dir=str(out), hosts=['127.0.0.1'])
  assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
  for name in certs.ALL_FILES:
    mode = stat.S_IMODE(os.stat(out / name).st_mode)
    assert mode == (0o600 if name.endswith('.key') else 0o644), (name,
                                                                 oct(mode))


def test_existing_files_are_never_overwritten(tmp_path):
  out = tmp_path / 'certs'
  out.mkdir()
  (out / certs.DRIVER_KEY).write_text('mine')
  with pytest.raises(certs.CertError, match='driver.key already exist'):
    certs.make_certs(out_dir=str(out), hosts=['127.0.0.1'])
  assert os.listdir(out) == [certs.DRIVER_KEY]
  assert (out / certs.DRIVER_KEY).read_text() == 'mine'


@pytest.mark.parametrize('hosts,match', [([], 'empty'),
                                         (['bad name'], 'neither'),
                                         (['a\nsubjectAltName=x'], 'neither')])
def test_bad_hosts_are_refused(tmp_path, hosts, match):
  with pytest.raises(certs.CertError, match=match):
    certs.make_certs(out_dir=str(tmp_path / 'c'), hosts=hosts)
  assert not (tmp_path / 'c').exists()


@pytest.mark.e2e
def test_the_program_refuses_to_overwrite_with_one_line_and_exit_2(tmp_path):
  out = str(tmp_path / 'certs')
  command = [sys.executable, '-m', 'tff_dp.cli.certs', f'--out_dir={out}']
  first = subprocess.run(command,
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=False)
  assert first.returncode == 0, first.stderr
  assert f'wrote {out}/ca.crt' in first.stdout
  again = subprocess.run(command,
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=False)
  assert again.returncode == 2
  assert again.stderr.count('\n') == 1, again.stderr
  assert again.stderr.startswith('tff-dp-certs: error: --out_dir=')
  assert 'refusing to overwrite' in again.stderr
