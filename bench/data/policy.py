"""A manifest's evaluation policy: declared in its header, or derived from its event times when it declares none.

A derived policy (``EvaluationPolicy.derived``) is frozen in the split file by ``bench splits make/import``
(``bench.protocol.splits``), so adding patients later never moves the horizons a split's results were scored at.
"""

from __future__ import annotations

import numpy as np

from bench.data.cohort import EvaluationPolicy
from bench.errors import DataError

QUANTILES = (0.25, 0.5, 0.75)  # of the event times: a derived policy's horizons


def declared_policy(header: dict, horizons, tau) -> tuple[EvaluationPolicy | None, str | None]:
    """The policy a manifest header (or ``--horizons``/``--tau``) declares, and the problem with it; (None, None)
    when it declares no horizons and tau."""
    horizons = horizons or header.get("horizons")
    tau = tau if tau is not None else header.get("tau")
    endpoint = header.get("endpoint", "survival")
    if not isinstance(endpoint, str) or not endpoint.strip():
        return None, f"endpoint must be text, e.g. 'overall survival', got {endpoint!r}"
    if horizons is None or tau is None:
        return None, None
    if isinstance(horizons, (str, bytes)) or not isinstance(horizons, (list, tuple)):
        return None, f"horizons must be a list of times, e.g. [365, 730], got {horizons!r}"
    try:
        policy = EvaluationPolicy(
            horizons=tuple(float(h) for h in horizons),
            tau=float(tau),
            time_unit=str(header.get("time_unit", "days")),
            endpoint=endpoint.strip(),
        )
    except (TypeError, ValueError, DataError) as exc:
        return None, f"bad horizons/tau ({exc})"
    try:
        return policy.declared(header), None
    except DataError as exc:
        return None, str(exc)


def derived_policy(time: np.ndarray, event: np.ndarray, header: dict) -> EvaluationPolicy | None:
    """Horizons at the 25, 50 and 75 % quantiles of the event times, rounded to whole time units, and tau the
    last, with the header's other policy keys; None without events to take them from (raises ``DataError`` for a
    bad key)."""
    times = np.asarray(time, dtype=float)[np.asarray(event, dtype=bool)]
    if times.size == 0:
        return None
    horizons = tuple(sorted({float(max(1.0, round(float(q)))) for q in np.quantile(times, QUANTILES)}))
    endpoint = str(header.get("endpoint", "survival")).strip() or "survival"
    policy = EvaluationPolicy(horizons, horizons[-1], str(header.get("time_unit", "days")), endpoint=endpoint,
                              derived=True)  # fmt: skip
    return policy.declared(header)
