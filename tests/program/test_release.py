"""The release allow-list: the one gate every released value passes."""

import pytest

from tff_dp.program import release


def test_dp_safe_keys_pass_in_a_dp_run():
  release.check_release_keys(release.DP_SAFE_KEYS,
                             private=True,
                             allow_nonprivate=False)


@pytest.mark.parametrize('key', sorted(release.NONPRIVATE_KEYS))
def test_nonprivate_keys_are_refused_in_a_dp_run_unless_asked(key):
  with pytest.raises(release.ReleaseError, match=key):
    release.check_release_keys([key], private=True, allow_nonprivate=False)
  release.check_release_keys([key], private=True, allow_nonprivate=True)
  release.check_release_keys([key], private=False, allow_nonprivate=False)


@pytest.mark.parametrize(
    'key',
    [
        'train/loss',  # exact client training loss, unlabelled
        'client_work/update_non_finite',
        'cohort/size',  # the actual (data-dependent) cohort size
        'eval/accuracy_by_client',
    ])
def test_unknown_keys_are_refused_everywhere(key):
  for private in (True, False):
    with pytest.raises(release.ReleaseError):
      release.check_release_keys([key], private=private, allow_nonprivate=True)


def test_every_nonprivate_key_is_labelled():
  assert all(
      k.startswith(release.NONPRIVATE_PREFIX) for k in release.NONPRIVATE_KEYS)
  assert not any(
      k.startswith(release.NONPRIVATE_PREFIX) for k in release.DP_SAFE_KEYS)
