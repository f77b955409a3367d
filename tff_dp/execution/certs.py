"""A small certificate authority for the workers' mutual TLS, made with openssl.

TFF's worker speaks plaintext, unauthenticated gRPC; a remote driver reaches
it only through a TLS proxy (`tls_proxy`) that requires a client
certificate signed by this CA. `make_certs` writes, into one directory:

* `ca.crt`, `ca.key`: the CA (keep `ca.key` on the machine that made it: it
  is what lets anyone mint a driver certificate);
* `worker.crt`, `worker.key`: the workers' server certificate, valid for the
  host names and IP addresses given (the driver checks the name it dials);
* `driver.crt`, `driver.key`: the driver's client certificate.

Keys are EC P-256, created mode 0600 (umask 077 while openssl runs, then an
explicit chmod); certificates 0644. Nothing is overwritten: every file is
made in a fresh temporary directory inside the output directory and then
hard-linked into place, which fails if the name exists (also if it appeared
meanwhile). Serial numbers come from the OS's entropy.

Standard library only: `./run.sh certs` needs no TensorFlow.
"""

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from typing import Sequence

CA_CERT = 'ca.crt'
CA_KEY = 'ca.key'
WORKER_CERT = 'worker.crt'
WORKER_KEY = 'worker.key'
DRIVER_CERT = 'driver.crt'
DRIVER_KEY = 'driver.key'
ALL_FILES = (CA_CERT, CA_KEY, WORKER_CERT, WORKER_KEY, DRIVER_CERT, DRIVER_KEY)
# What each side needs in its --certs_dir / --worker_certs directory.
WORKER_FILES = (CA_CERT, WORKER_CERT, WORKER_KEY)
DRIVER_FILES = (CA_CERT, DRIVER_CERT, DRIVER_KEY)
DEFAULT_DAYS = 365
# A DNS name as a subjectAltName may hold it (and nothing that could break
# out of the openssl extension file the names are written to).
_HOST_NAME = re.compile(r'^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}'
                        r'[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}'
                        r'[A-Za-z0-9])?)*$')
_KEY_ARGS = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']


class CertError(Exception):
  """Certificates cannot be made as asked; the message is one line."""


def subject_alt_names(hosts: Sequence[str]) -> str:
  """The subjectAltName value for `hosts` (IP addresses and DNS names).

  Args:
    hosts: Host names or IP addresses the workers are dialled by.

  Returns:
    E.g. 'IP:127.0.0.1,DNS:localhost'.

  Raises:
    CertError: For an empty list or a name that is neither.
  """
  if not hosts:
    raise CertError('--hosts is empty: name at least one host the workers '
                    'are reached by (e.g. 127.0.0.1,localhost)')
  names = []
  for host in hosts:
    try:
      names.append(f'IP:{ipaddress.ip_address(host)}')
    except ValueError:
      if not _HOST_NAME.match(host):
        raise CertError(f'--hosts: {host!r} is neither an IP address nor a '
                        'host name') from None
      names.append(f'DNS:{host}')
  return ','.join(names)


def _openssl(*args: str, cwd: str) -> None:
  """Runs openssl; its failure becomes one line with openssl's last words."""
  openssl = shutil.which('openssl')
  if openssl is None:
    raise CertError('openssl is not installed (e.g. apt-get install openssl)')
  result = subprocess.run([openssl, *args],
                          cwd=cwd,
                          stdin=subprocess.DEVNULL,
                          capture_output=True,
                          text=True,
                          check=False)
  if result.returncode != 0:
    last = (result.stderr.strip().splitlines() or ['no message'])[-1]
    raise CertError(f'openssl {args[0]} failed (exit {result.returncode}): '
                    f'{last}')


def _serial() -> str:
  return '0x' + secrets.token_hex(16)


def _make_ca(work: str, days: int) -> None:
  _openssl('req',
           '-x509',
           *_KEY_ARGS,
           '-keyout',
           CA_KEY,
           '-out',
           CA_CERT,
           '-days',
           str(days),
           '-subj',
           '/CN=tff-dp workers CA',
           '-set_serial',
           _serial(),
           '-addext',
           'basicConstraints=critical,CA:TRUE,pathlen:0',
           '-addext',
           'keyUsage=critical,keyCertSign,cRLSign',
           cwd=work)


def _make_leaf(work: str, name: str, common_name: str, extensions: str,
               days: int) -> None:
  """A key and a certificate signed by the CA, with `extensions`."""
  csr, ext = f'{name}.csr', f'{name}.ext'
  with open(os.path.join(work, ext), 'w', encoding='ascii') as f:
    f.write('basicConstraints=critical,CA:FALSE\n'
            'keyUsage=critical,digitalSignature\n' + extensions)
  _openssl('req',
           '-new',
           *_KEY_ARGS,
           '-keyout',
           f'{name}.key',
           '-out',
           csr,
           '-subj',
           f'/CN={common_name}',
           cwd=work)
  _openssl('x509',
           '-req',
           '-in',
           csr,
           '-CA',
           CA_CERT,
           '-CAkey',
           CA_KEY,
           '-set_serial',
           _serial(),
           '-days',
           str(days),
           '-sha256',
           '-extfile',
           ext,
           '-out',
           f'{name}.crt',
           cwd=work)


def _check_out_dir(out_dir: str) -> None:
  existing = [
      name for name in ALL_FILES if os.path.lexists(os.path.join(out_dir, name))
  ]
  if existing:
    raise CertError(f'--out_dir={out_dir}: {", ".join(existing)} already '
                    'exist; refusing to overwrite (choose another directory '
                    'or remove them)')


def make_certs(*,
               out_dir: str,
               hosts: Sequence[str],
               days: int = DEFAULT_DAYS) -> list[str]:
  """Writes the CA, worker and driver certificates (module docstring).

  Args:
    out_dir: The directory (created mode 0700 if missing).
    hosts: Names and addresses the worker certificate is valid for.
    days: Validity of every certificate.

  Returns:
    The paths written, in `ALL_FILES` order.

  Raises:
    CertError: For bad hosts, existing files or an openssl failure; nothing
      is left behind then (files already linked into place are removed).
  """
  alt_names = subject_alt_names(hosts)
  if not 1 <= days <= 3650:
    raise CertError(f'--days={days}: must be an integer in [1, 3650]')
  try:
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
  except OSError as e:
    raise CertError(f'--out_dir={out_dir}: {e.strerror}') from e
  _check_out_dir(out_dir)
  work = tempfile.mkdtemp(prefix='.tff-dp-certs-', dir=out_dir)
  old_umask = os.umask(0o077)
  written = []
  try:
    _make_ca(work, days)
    _make_leaf(work, 'worker', 'tff-dp worker',
               f'extendedKeyUsage=serverAuth\nsubjectAltName={alt_names}\n',
               days)
    _make_leaf(work, 'driver', 'tff-dp driver', 'extendedKeyUsage=clientAuth\n',
               days)
    for name in ALL_FILES:
      os.chmod(os.path.join(work, name),
               0o600 if name.endswith('.key') else 0o644)
      target = os.path.join(out_dir, name)
      try:
        os.link(os.path.join(work, name), target)
      except FileExistsError:
        raise CertError(
            f'--out_dir={out_dir}: {name} appeared while the '
            'certificates were made; refusing to overwrite it') from None
      written.append(target)
  except BaseException:
    for path in written:
      with contextlib.suppress(OSError):
        os.unlink(path)
    raise
  finally:
    os.umask(old_umask)
    shutil.rmtree(work, ignore_errors=True)
  return written


def missing_files(directory: str, names: Sequence[str]) -> list[str]:
  """Which of `names` are not regular files in `directory`."""
  return [
      name for name in names
      if not os.path.isfile(os.path.join(directory, name))
  ]
