"""The audit program on a deliberately broken mechanism (a tenth of the noise).

`python -m tests.helpers.broken_audit FLAGS...` runs `tff_dp.cli.audit` with
every central aggregator built at one tenth of the accounted noise
multiplier: the defect the audit exists to catch. Tests only.
"""

from tests.helpers import central_dp
from tff_dp.cli import audit
from tff_dp.program import mechanism_audit

_audit_mechanism = mechanism_audit.audit_mechanism


def _a_tenth_of_the_noise(config, **kwargs):
  return _audit_mechanism(config,
                          build_aggregator=central_dp.scaled_noise(config, 0.1),
                          **kwargs)


if __name__ == '__main__':
  mechanism_audit.audit_mechanism = _a_tenth_of_the_noise
  audit.entry_point()
