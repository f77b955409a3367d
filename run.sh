#!/usr/bin/env bash
# tff-dp launcher. Sets up .venv from requirements.lock when it is missing or the
# lock changed, then runs a subcommand. `./run.sh help` lists them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ROOT}/.venv"
LOCK="${ROOT}/requirements.lock"
LOCK_STAMP="${VENV}/.tff-dp-lock"
PACKAGE_STAMP="${VENV}/.tff-dp-package"
DEFAULT_CONFIG="${ROOT}/configs/default.cfg"
# `./run.sh lock` resolves against the index as it was on this date, so the same
# command gives the same lock; move the date to take newer releases.
LOCK_DATE="2026-11-26"

usage() {
  cat <<'EOF'
Usage: ./run.sh <command> [arguments]

Commands:
  train [flags]        Train (DP-FedAvg). Without --flagfile, configs/default.cfg is
                       used; other flags override it. Outputs go to runs/<name>/.
  pretrain [flags]     Train the model centrally on the clients a dataset declares
                       public (--dataset=python_stdlib), no noise; writes
                       --output=DIR for train --init_from=DIR.
  test [pytest args]   Run the test suite (add --run-slow for the slow tier).
  lint [--fix]         Check formatting (yapf, .style.yapf) and lint (ruff,
                       ruff.toml); --fix rewrites the files instead. CI runs it
                       before the tests.
  epsilon [flags]      Privacy accounting without training: epsilon of a run
                       directory's ledger (--run_dir), of planned settings, or
                       the noise/rounds that reach --target_epsilon.
  audit [flags]        Empirical privacy audit of a config (canaries, membership)
                       (default configs/default.cfg): canary clients give a
                       measured lower bound and estimates next to epsilon.
  sweep [flags]        Run a config over --grid=FLAG=V1,V2 and/or
                       --target_epsilons=E1,E2 with --seeds=N and its
                       non-private twin (default configs/default.cfg); resumes;
                       writes a results table and privacy-utility plots.
  compare DIR...       The same table and plots for existing runs or sweeps.
  import-data [flags]  Turn a CSV/.npz with a client column into SQLite client data
                       (then: train --dataset=sqlite --client_data=FILE).
  certs --out_dir=DIR  A small CA, a worker and a driver certificate (openssl) for
                       running on several machines (README).
  worker --tls --port=P --certs_dir=DIR
                       Serve a TFF worker to remote drivers through mutual TLS
                       (stunnel, installed with apt-get if missing).
  tensorboard [--port N] [--logdir DIR]
                       Serve runs/ (or DIR) with TensorBoard on 127.0.0.1 only.
  bench [--quick]      Benchmarks: seconds per round vs the compute floor and plain
                       TFF, time to first round, memory over 300 rounds (~25 min;
                       --quick ~1 min). Writes benchmarks/results/latest.json.
  bench --peers [--quick] [--alternations N]
                       tff-dp, the floor, Flower and pfl on W1 and W2, alternating
                       (makes the peers' pinned environments once, under
                       ~/.cache/tff-dp/peers; ~25 min for 2 alternations).
  bench --workers [--quick]
                       Seconds per round with 1, 2, 3 TLS workers reading their
                       own shards, and the local grouped path (~12 min).
  bench outside-round [--sinks]
                       What the loop does outside the round (accounting,
                       ledger and checkpoint JSON; --sinks: releases) at
                       rounds 10..1500, without training (pure Python).
  lock                 Regenerate requirements.lock (needs network; uses uv).
  help                 Show this message.

The first command sets up .venv (Python 3.11 required; set TFF_DP_PYTHON to
choose the interpreter). It is rebuilt only when requirements.lock or setup.py
changes.
EOF
}

die() {
  printf 'run.sh: error: %s\n' "$*" >&2
  exit 2
}

find_python() {
  local candidate
  for candidate in "${TFF_DP_PYTHON:-}" python3.11 python3; do
    [[ -n "${candidate}" ]] || continue
    command -v "${candidate}" >/dev/null 2>&1 || continue
    if "${candidate}" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        >/dev/null 2>&1; then
      command -v "${candidate}"
      return 0
    fi
  done
  return 1
}

fingerprint() {
  cat "$@" | sha256sum | cut -d' ' -f1
}

venv_is_current() {
  [[ -x "${VENV}/bin/python" && -f "${LOCK_STAMP}" \
    && "$(cat "${LOCK_STAMP}")" == "$(fingerprint "${LOCK}")" ]]
}

# What the editable install builds from: setup.py, the worker's C shim and
# whether a C compiler is there to build it (installing one later rebuilds
# once, so the shim appears; a broken one does not reinstall on every run).
package_fingerprint() {
  {
    cat "${ROOT}/setup.py" "${ROOT}/tff_dp/execution/native/loopback_bind.c"
    printf 'compilers=%s\n' "$(command -v cc gcc clang | tr '\n' ' ')"
  } | sha256sum | cut -d' ' -f1
}

shim_is_built() {
  compgen -G "${ROOT}/tff_dp/execution/native/_loopback_bind*.so" >/dev/null
}

package_is_current() {
  [[ -f "${PACKAGE_STAMP}" && "$(cat "${PACKAGE_STAMP}")" == "$(package_fingerprint)" ]]
}

ensure_venv() {
  if venv_is_current && package_is_current; then
    return 0
  fi
  # Serialize concurrent first runs (e.g. two terminals) on one set-up.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${ROOT}/.venv.lock"
    flock 9
  fi
  if ! venv_is_current; then
    local python
    python="$(find_python)" || die "Python 3.11 is required (tensorflow-federated 0.87 \
supports <3.12 and requirements.lock is resolved for 3.11) but no python3.11 was found \
on PATH. Install Python 3.11 or set TFF_DP_PYTHON=/path/to/python3.11."
    printf 'run.sh: setting up %s from requirements.lock (first run, or the lock changed)\n' \
      "${VENV}" >&2
    rm -rf "${VENV}"
    "${python}" -m venv "${VENV}"
    # --require-hashes: every wheel must match the lock. pip compiles bytecode at
    # install time (uv would not), which halves the cost of importing TFF.
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-deps --require-hashes -r "${LOCK}"
    fingerprint "${LOCK}" >"${LOCK_STAMP}"
  fi
  if ! package_is_current; then
    # Editable, so that edits to tff_dp/ need no reinstall; only setup.py
    # changes (e.g. a new console script) and the C shim come through here.
    # The shim is optional: without a compiler pip warns and installs the rest.
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-deps --no-build-isolation --editable "${ROOT}"
    package_fingerprint >"${PACKAGE_STAMP}"
    shim_is_built || printf 'run.sh: warning: the shim that confines the TFF worker to a \
private Unix socket was not built (no working C compiler?): training runs will be refused \
unless you pass --allow_unconfined_worker; see README, "Security notes"\n' >&2
    printf 'run.sh: environment ready\n' >&2
  fi
}

has_flagfile() {
  local arg
  for arg in "$@"; do
    case "${arg}" in
      --flagfile=* | --flagfile) return 0 ;;
    esac
  done
  return 1
}

cmd_train() {
  ensure_venv
  if has_flagfile "$@"; then
    exec "${VENV}/bin/tff-dp" "$@"
  fi
  exec "${VENV}/bin/tff-dp" "--flagfile=${DEFAULT_CONFIG}" "$@"
}

cmd_pretrain() {
  ensure_venv
  exec "${VENV}/bin/python" -m tff_dp.cli.pretrain "$@"
}

cmd_epsilon() {
  ensure_venv
  exec "${VENV}/bin/tff-dp-epsilon" "$@"
}

cmd_audit() {
  ensure_venv
  if has_flagfile "$@"; then
    exec "${VENV}/bin/python" -m tff_dp.cli.audit "$@"
  fi
  exec "${VENV}/bin/python" -m tff_dp.cli.audit "--flagfile=${DEFAULT_CONFIG}" "$@"
}

cmd_sweep() {
  ensure_venv
  if has_flagfile "$@"; then
    exec "${VENV}/bin/python" -m tff_dp.cli.sweep "$@"
  fi
  exec "${VENV}/bin/python" -m tff_dp.cli.sweep "--flagfile=${DEFAULT_CONFIG}" "$@"
}

cmd_compare() {
  ensure_venv
  exec "${VENV}/bin/python" -m tff_dp.cli.compare "$@"
}

cmd_import_data() {
  ensure_venv
  exec "${VENV}/bin/python" -m tff_dp.cli.import_data "$@"
}

cmd_certs() {
  ensure_venv
  exec "${VENV}/bin/python" -m tff_dp.cli.certs "$@"
}

# The worker's TLS proxy is Debian's stunnel4, a system package: installed
# here (never by hand) so that a fresh machine, and CI, get it too.
ensure_stunnel() {
  if command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "stunnel (the worker's TLS proxy) \
is not installed and apt-get is not available: install stunnel 5 with your \
package manager"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  printf 'run.sh: installing stunnel4 (the worker'"'"'s TLS proxy) with apt-get\n' >&2
  # apt's output goes to a log, shown only if the install fails.
  local log
  log="$(mktemp)"
  if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      "${sudo[@]}" apt-get install -y -qq --no-install-recommends stunnel4; } >"${log}" 2>&1; then
    tail -n 5 "${log}" >&2
    rm -f "${log}"
    die "apt-get install stunnel4 failed: install it (stunnel 5) and retry"
  fi
  rm -f "${log}"
}

cmd_worker() {
  ensure_venv
  ensure_stunnel
  exec "${VENV}/bin/python" -m tff_dp.cli.worker "$@"
}

LINT_LOCK="${ROOT}/requirements/lint.lock"
# What the formatter and linter read: the package, its tests and tools.
LINT_PATHS=(tff_dp tests tools benchmarks setup.py)

cmd_lint() {
  ensure_venv
  cd "${ROOT}"
  if ! cmp -s "${LINT_LOCK}" "${VENV}/.tff-dp-lint-lock"; then
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-deps --require-hashes -r "${LINT_LOCK}"
    cp "${LINT_LOCK}" "${VENV}/.tff-dp-lint-lock"
  fi
  case "${1:-}" in
    --fix)
      "${VENV}/bin/ruff" check --fix --quiet "${LINT_PATHS[@]}" || true
      exec "${VENV}/bin/yapf" --in-place --recursive --parallel "${LINT_PATHS[@]}"
      ;;
    "")
      local diff rc=0
      diff="$("${VENV}/bin/yapf" --diff --recursive --parallel "${LINT_PATHS[@]}")" || rc=$?
      if [[ -n "${diff}" ]]; then
        printf '%s\n' "${diff}" | grep '^+++' | sed 's/^+++ /needs formatting: /' >&2
        die "lint: run ./run.sh lint --fix (yapf, .style.yapf)"
      elif ((rc != 0)); then
        die "lint: yapf failed (exit ${rc})"
      fi
      exec "${VENV}/bin/ruff" check --quiet "${LINT_PATHS[@]}"
      ;;
    *) die "lint: unknown argument '$1' (accepted: --fix)" ;;
  esac
}

cmd_bench() {
  ensure_venv
  cd "${ROOT}"
  if [[ "${1:-}" == outside-round ]]; then
    shift
    exec "${VENV}/bin/python" -m benchmarks.outside_round "$@"
  fi
  local arg rest=()
  for arg in "$@"; do
    [[ "${arg}" == --workers ]] && ensure_stunnel  # The workers' TLS proxies.
    [[ "${arg}" == --peers ]] || rest+=("${arg}")
  done
  if (( ${#rest[@]} != $# )); then
    exec "${VENV}/bin/python" -m benchmarks.peers "${rest[@]}"
  fi
  exec "${VENV}/bin/python" -m benchmarks.run_all "$@"
}

cmd_test() {
  ensure_venv
  cd "${ROOT}"
  # Two workers, one test file each at a time: most of the suite's time is
  # subprocesses (training runs), which leave the second core idle otherwise.
  # Files go out in conftest's order (costly first), not xdist's default
  # (most tests first), which started a 2-minute file last.
  # The worker tests run the TLS proxy: install it as `worker` would. Without
  # apt-get (or sudo) the suite still runs, and the TLS tests skip and say why;
  # .ci/run installs it strictly first, so CI never skips them.
  (ensure_stunnel) || printf 'run.sh: warning: no stunnel, so the tests of \
./run.sh worker --tls and --workers will be skipped\n' >&2
  exec "${VENV}/bin/python" -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
}

cmd_tensorboard() {
  local port=6006 logdir="runs"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --port | --logdir)
        [[ $# -ge 2 ]] || die "tensorboard: $1 needs a value"
        if [[ "$1" == --port ]]; then port="$2"; else logdir="$2"; fi
        shift 2
        ;;
      --port=*) port="${1#--port=}"; shift ;;
      --logdir=*) logdir="${1#--logdir=}"; shift ;;
      *) die "tensorboard: unknown argument '$1' (accepted: --port N, --logdir DIR)" ;;
    esac
  done
  # At most 5 digits before any arithmetic: bash reads a leading 0 as octal
  # and wraps numbers past 2^63 (18446744073709551617 would become port 1).
  [[ "${port}" =~ ^[0-9]{1,5}$ ]] && ((10#${port} >= 1 && 10#${port} <= 65535)) \
    || die "tensorboard: --port=${port}: must be an integer in [1, 65535]"
  port="$((10#${port}))"
  [[ -d "${logdir}" ]] || die "tensorboard: --logdir=${logdir}: no such directory \
(train first: ./run.sh train)"
  ensure_venv
  # --host 127.0.0.1: the runs stay on this machine; use an SSH tunnel to view
  # them remotely rather than serving on all interfaces. Quiet as the Python
  # programs are (tff_dp/cli/launch.py): TensorFlow's C++ start-up log unless
  # TF_CPP_MIN_LOG_LEVEL is set, and setuptools' warning about TensorBoard's
  # own `import pkg_resources`.
  TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}" \
    PYTHONWARNINGS="${PYTHONWARNINGS:+${PYTHONWARNINGS},}ignore:pkg_resources is deprecated as an API:UserWarning" \
    exec "${VENV}/bin/tensorboard" --logdir "${logdir}" --host 127.0.0.1 --port "${port}"
}

cmd_lock() {
  local tools
  tools="$(mktemp -d)"
  # Expanded now: at exit, cmd_lock has returned and its local is gone (set -u
  # would stop the clean-up and leave the temporary venv behind).
  trap "rm -rf -- $(printf '%q' "${tools}")" EXIT
  local python
  python="$(find_python)" || die "Python 3.11 is required to regenerate the lock"
  "${python}" -m venv "${tools}/venv"
  "${tools}/venv/bin/python" -m pip install --quiet uv
  # The override replaces TFF's jaxlib==0.4.14 pin (not on our package index)
  # with 0.4.13; see requirements/overrides.txt.
  "${tools}/venv/bin/uv" pip compile --quiet \
    --python-version 3.11 --python-platform x86_64-manylinux_2_31 \
    --exclude-newer "${LOCK_DATE}" \
    --override "${ROOT}/requirements/overrides.txt" \
    --generate-hashes --custom-compile-command './run.sh lock' \
    "${ROOT}/requirements/requirements.in" -o "${LOCK}"
  printf 'run.sh: wrote %s\n' "${LOCK}" >&2
}

main() {
  local command="${1:-help}"
  [[ $# -gt 0 ]] && shift
  case "${command}" in
    train) cmd_train "$@" ;;
    pretrain) cmd_pretrain "$@" ;;
    test) cmd_test "$@" ;;
    lint) cmd_lint "$@" ;;
    epsilon) cmd_epsilon "$@" ;;
    import-data) cmd_import_data "$@" ;;
    certs) cmd_certs "$@" ;;
    worker) cmd_worker "$@" ;;
    audit) cmd_audit "$@" ;;
    sweep) cmd_sweep "$@" ;;
    compare) cmd_compare "$@" ;;
    bench) cmd_bench "$@" ;;
    tensorboard) cmd_tensorboard "$@" ;;
    lock) cmd_lock "$@" ;;
    help | -h | --help) usage ;;
    *)
      usage >&2
      die "unknown command '${command}'"
      ;;
  esac
}

main "$@"
