"""The two built-in real models, really loaded (slow: a GGUF conversion and a fine-tuning run, cached in
the session's data dir so each happens once), and the lenses on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spex.errors import SpexInputError
from spex.lenses import features, heads
from spex.models import load
from spex.models.builtins import smollm2_gguf_path
from tests.tolerances import assert_close

pytestmark = pytest.mark.slow
ULPS_PER_LAYER = 16
"""Float32 ulps per transformer layer that one value computed two ways (another batch, the prefix
cache) may differ by: the tiny 2-layer models get 32 (tests/flows/tolerances.py), SmolLM2's 30
layers 480 (measured: 4 for the features lens, 8 for the heads lens)."""


@pytest.mark.timeout(900)
def test_smollm2_builtin_converts_once_and_matches_the_gguf(lens_data_dir):
    model = load("builtin:smollm2-135m-instruct", device="cpu")
    cfg = model.config
    assert model.kind == "causal-lm" and cfg.model_type == "llama"
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    assert model.tokenizer.chat_template and "<|im_start|>" in model.tokenizer.chat_template
    assert model.path.parent == lens_data_dir / "models"
    weights = model.path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = load("builtin:smollm2-135m-instruct", device="cpu")
    assert again.path == model.path and weights.stat().st_mtime_ns == stamp  # no second conversion
    assert again.identity == model.identity and "builtin:smollm2-135m-instruct@" in model.identity

    # the converted folder computes what the GGUF itself computes (transformers' own GGUF loading)
    gguf = load(smollm2_gguf_path(), device="cpu")
    assert gguf.identity.startswith("gguf:")
    ids = model.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        # the same weights through the same kernels: equal to float32 rounding (measured: equal to the bit)
        assert_close(model.model(**ids).logits.numpy(), gguf.model(**ids).logits.numpy())
    del gguf

    # features lens: the reference is the model's own answer; the template wraps the masked content
    vf = features(model, "Is Paris the capital of France? Answer yes or no.", max_new_tokens=6)
    assert vf.target.strip() and vf.model_input(np.ones(vf.n_features, bool)).count("<|im_start|>") == 3
    masks = np.random.default_rng(0).random((4, vf.n_features)) < 0.5
    masks[0] = True
    values = vf(masks)
    two_ways = ULPS_PER_LAYER * cfg.num_hidden_layers  # a batch of 4 on the prefix cache vs the plain forward
    assert_close([values[0]], [vf.full_value], ulps=two_ways)
    assert np.all(values[1:] < values[0] + 1)

    # heads lens with grouped-query attention: 9 query heads per layer on the o_proj input
    hv = heads(model, ["The capital of France is", "The capital of Italy is"], [" Paris", " Rome"], layers=[0, 15])
    assert hv.n_features == 18 and hv.sites[0].head_dim == 64
    hmasks = np.ones((3, 18), dtype=bool)
    hmasks[1, :9] = False
    hmasks[2, 9:] = False
    hvalues = hv(hmasks)  # (batch == single runs is checked on the tiny models)
    assert_close([hvalues[0]], [hv.full_value], ulps=two_ways)  # a batch of 3 vs a batch of 1
    assert hvalues[0] > -5  # it knows the capitals
    assert np.all(np.abs(hvalues[1:] - hvalues[0]) > 1e-4)  # removing a layer's heads changes the answer


@pytest.mark.timeout(900)
def test_minilm_sentiment_builtin_trains_once(lens_data_dir):
    model = load("builtin:minilm-sentiment", device="cpu")
    assert model.kind == "classifier" and model.labels == ["negative", "positive"]
    report = model.source
    assert report["n_test"] == 60 and report["seed"] == 0 and report["variant"] == "full"
    assert report["heldout_accuracy"] >= 0.75, report
    again = load("builtin:minilm-sentiment", device="cpu")
    assert again.identity == model.identity and again.path == model.path
    with pytest.raises(SpexInputError, match="variant"):
        load("builtin:minilm-sentiment?variant=bogus")
    with pytest.raises(SpexInputError, match="does not take"):
        load("builtin:minilm-sentiment?epochs=3")

    with torch.no_grad():
        enc = model.tokenizer(["I loved every minute of it.", "It was a waste of money."], padding=True,
                              return_tensors="pt")
        assert model.model(**enc).logits.argmax(-1).tolist() == [1, 0]
    vf = features(model, "The food was not bad, but the service was slow.", target="positive", mask="unk")
    assert vf.n_features == 10 and vf.masked_prompt(np.eye(10, dtype=bool)[0]).count("[UNK]") == 9
    masks = np.random.default_rng(0).random((8, 10)) < 0.5
    assert np.ptp(vf(masks)) > 0.1
    hv = heads(model, ["not bad at all", "good but far too long"], ["positive", "negative"])
    assert hv.n_features == 72 and hv.feature_labels[-1] == "L5H11"
