"""The typed stage outputs cross a Prefect task boundary (persisted results, Ray workers): they pickle
back equal, and a spectrum serialised as JSON says which format it is in."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from spex.engine.spectrum import JSON_FORMAT, Spectrum


def test_spectrum_json_carries_its_format_and_old_payloads_still_read():
    spectrum = Spectrum.from_dict(5, {(): 0.5, (1,): -1.0, (0, 4): 2.0})
    payload = json.loads(spectrum.to_json())
    assert payload["format"] == JSON_FORMAT == 1
    assert Spectrum.from_json(spectrum.to_json()).to_dict() == spectrum.to_dict()
    old = json.dumps({k: v for k, v in payload.items() if k != "format"})  # written before formats were numbered
    assert Spectrum.from_json(old).to_dict() == spectrum.to_dict()
    with pytest.raises(ValueError, match="format 2 is not readable"):
        Spectrum.from_json(json.dumps({**payload, "format": 2}))


def test_stage_outputs_pickle():
    from spex.audit.fitting import Fit
    from spex.audit.sampling import Samples
    from spex.audit.validation import RemovalPlan

    spectrum = Spectrum.from_dict(4, {(): 1.0, (2, 3): 0.25})
    fit = Fit(spectrum=spectrum, diagnostics={"proxy_r2": 0.9, "exact": False}, booster=None,
              seconds={"total": 0.1}, n_calls=1, method="proxyspex", options={})
    back = pickle.loads(pickle.dumps(fit))
    assert back.spectrum.to_dict() == spectrum.to_dict() and back.coefficients == 2 == fit.coefficients
    assert back.diagnostics == fit.diagnostics
    masks = np.random.default_rng(0).random((6, 4)) < 0.5
    samples = pickle.loads(pickle.dumps(Samples(masks, ~masks)))
    np.testing.assert_array_equal(samples.train, masks)
    assert samples.count == 12 and samples.role("holdout").shape == (6, 4)
    plan = pickle.loads(pickle.dumps(RemovalPlan(r=1, choices=[{"direction": "down"}], masks=masks[:3])))
    assert plan.r == 1 and plan.masks.shape == (3, 4)
