"""Heads lens on tiny real GPT-2, Llama (grouped-query attention) and BERT models.

Every hooked value is checked against an independent computation: a deep copy of the model whose
output-projection *weights* are edited (columns of a removed head zeroed, or folded into the bias for
mean ablation), run one sequence at a time without padding and without hooks.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from spex.errors import SpexInputError
from spex.lenses import heads
from spex.lenses.attention_heads import head_sites
from tests.tolerances import approx, assert_close, tolerance

PROMPTS = ["The capital of France is", "Good but too long. The answer is", "She said the hotel was"]
ANSWERS = [" Paris", " yes", " clean"]
TEXTS = ["the food was not bad", "good but too long", "never again", "the hotel was clean and quiet"]
CLASSES = ["positive", "negative", "negative", "positive"]


def _proj_columns(module: torch.nn.Module) -> torch.Tensor:
    """Weight laid out (out, in) for Linear, (in, out) for GPT-2's Conv1D: return a view with inputs on dim 0."""
    return module.weight.T if isinstance(module, torch.nn.Linear) else module.weight


def edited_copy(loaded, gates: dict[int, np.ndarray], means: dict[int, torch.Tensor] | None = None):
    """A copy of the model whose o_proj weights implement the gates (and mean replacement via the bias)."""
    model = copy.deepcopy(loaded.model)
    sites = {s.layer: s for s in head_sites(model)}
    with torch.no_grad():
        for layer, g in gates.items():
            site = sites[layer]
            cols = _proj_columns(site.module)  # (in, out)
            d = site.head_dim
            if means is not None:
                shift = torch.zeros(cols.shape[1])
                for h in range(site.n_heads):
                    if g[h] == 0:
                        shift += means[layer][h * d:(h + 1) * d] @ cols[h * d:(h + 1) * d]
                site.module.bias += shift
            for h in range(site.n_heads):
                cols[h * d:(h + 1) * d] *= float(g[h])
    return model


def manual_value(loaded, model, prompts, answers) -> float:
    """Mean answer log-prob / class margin, one unpadded sequence at a time, no hooks."""
    tok = loaded.tokenizer
    values = []
    with torch.no_grad():
        for p, a in zip(prompts, answers):
            if loaded.kind == "causal-lm":
                pi, ai = tok(p)["input_ids"], tok(a, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([pi + ai])
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
                values.append(sum(float(logp[len(pi) - 1 + j, t]) for j, t in enumerate(ai)))
            else:
                logits = model(**tok(p, return_tensors="pt")).logits[0]
                c = loaded.class_index(a)
                values.append(float(logits[c] - torch.cat([logits[:c], logits[c + 1:]]).max()))
    return float(np.mean(values))


def task(loaded):
    return (PROMPTS, ANSWERS) if loaded.kind == "causal-lm" else (TEXTS, CLASSES)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_sites_found_per_architecture(name, request):
    loaded = request.getfixturevalue(name)
    sites = head_sites(loaded.model)
    expected = {"gpt2": "attn.c_proj", "llama": "self_attn.o_proj", "bert": "attention.output.dense"}[name]
    assert len(sites) == loaded.config.num_hidden_layers
    assert all(s.name.endswith(expected) and s.n_heads == 4 for s in sites)
    assert sites[0].head_dim == (8 if name == "llama" else 32 // 4)


def test_gqa_slices_query_heads(llama):
    """4 query heads share 2 key/value heads: the o_proj input still has one slice per query head."""
    cfg = llama.config
    assert cfg.num_key_value_heads == 2 and cfg.num_attention_heads == 4
    site = head_sites(llama.model)[0]
    assert site.module.in_features == cfg.num_attention_heads * cfg.head_dim
    vf = heads(llama, PROMPTS, ANSWERS)
    assert vf.n_features == cfg.num_hidden_layers * cfg.num_attention_heads
    # two query heads of the same kv group are separate features with different effects
    keep = np.ones((2, vf.n_features), dtype=bool)
    keep[0, 0] = False
    keep[1, 1] = False
    v = vf(keep)
    assert abs(v[0] - v[1]) > tolerance(v)[1]  # more than rounding apart


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_full_mask_is_the_unhooked_model(name, request):
    loaded = request.getfixturevalue(name)
    prompts, answers = task(loaded)
    vf = heads(loaded, prompts, answers)
    assert vf(np.ones((1, vf.n_features), dtype=bool))[0] == approx(
        manual_value(loaded, loaded.model, prompts, answers))


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_zeroing_one_head_matches_edited_weights(name, request):
    loaded = request.getfixturevalue(name)
    prompts, answers = task(loaded)
    vf = heads(loaded, prompts, answers)
    H = vf.sites[0].n_heads
    for layer, h in [(0, 1), (vf.layers[-1], H - 1)]:
        mask = np.ones(vf.n_features, dtype=bool)
        mask[vf.feature_labels.index(f"L{layer}H{h}")] = False
        gate = np.ones(H)
        gate[h] = 0
        expected = manual_value(loaded, edited_copy(loaded, {layer: gate}), prompts, answers)
        assert vf(mask[None])[0] == approx(expected)
    assert all(not s.module._forward_pre_hooks for s in vf.sites), "hooks must be removed after compute"


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_batch_of_masks_in_one_forward_equals_single_runs(name, request):
    loaded = request.getfixturevalue(name)
    prompts, answers = task(loaded)
    vf = heads(loaded, prompts, answers)
    masks = np.random.default_rng(0).random((7, vf.n_features)) < 0.6
    calls = []
    handle = loaded.model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        batched = vf(masks)
    finally:
        handle.remove()
    assert len(calls) == 1, "the whole batch of masks must run in one forward"
    single = np.array([vf(m[None])[0] for m in masks])
    assert_close(batched, single)
    assert np.ptp(batched) > 1e-4  # masks do change the value


def test_rescale_multiplies_kept_heads(gpt2):
    vf = heads(gpt2, PROMPTS, ANSWERS, layers=[1], rescale=True)
    mask = np.array([[True, False, True, False]])
    expected = manual_value(gpt2, edited_copy(gpt2, {1: np.array([2.0, 0, 2.0, 0])}), PROMPTS, ANSWERS)
    assert vf(mask)[0] == approx(expected)
    assert vf.feature_labels == ["L1H0", "L1H1", "L1H2", "L1H3"]


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_mean_ablation_replaces_head_by_its_reference_mean(name, request):
    loaded = request.getfixturevalue(name)
    prompts, answers = task(loaded)
    reference = ["the food was not bad at all", "The answer is yes", "never again"]
    vf = heads(loaded, prompts, answers, layers=[0, 1], mode="mean", reference=reference)
    # independent means: capture each layer's o_proj input one unpadded reference text at a time
    sites = head_sites(loaded.model)
    captured: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    handles = [sites[l].module.register_forward_pre_hook(lambda m, a, l=l: captured[l].append(a[0][0]))
               for l in (0, 1)]
    with torch.no_grad():
        for t in reference:
            loaded.model(**loaded.tokenizer(t, return_tensors="pt"))
    for h in handles:
        h.remove()
    means = {l: torch.cat(captured[l]).mean(0) for l in (0, 1)}
    mask = np.ones(vf.n_features, dtype=bool)
    mask[[vf.feature_labels.index("L0H2"), vf.feature_labels.index("L1H0"), vf.feature_labels.index("L1H3")]] = False
    gates = {0: np.array([1, 1, 0, 1.0]), 1: np.array([0, 1, 1, 0.0])}
    expected = manual_value(loaded, edited_copy(loaded, gates, means), prompts, answers)
    assert vf(mask[None])[0] == approx(expected)


def test_layer_selection_and_errors(llama, bert):
    vf = heads(llama, PROMPTS, ANSWERS, layers=[-1])
    assert vf.layers == [2] and vf.n_features == 4
    with pytest.raises(SpexInputError, match="layers"):
        heads(llama, PROMPTS, ANSWERS, layers=[5])
    with pytest.raises(SpexInputError, match="equal length"):
        heads(llama, PROMPTS, ANSWERS[:2])
    with pytest.raises(SpexInputError, match="not a class"):
        heads(bert, TEXTS, ["positive", "neutral", "negative", "positive"])
    with pytest.raises(SpexInputError, match="rescale"):
        heads(llama, PROMPTS, ANSWERS, mode="mean", rescale=True)


def test_fingerprint_tracks_options(llama):
    a = heads(llama, PROMPTS, ANSWERS)
    assert a.fingerprint == heads(llama, PROMPTS, ANSWERS).fingerprint
    assert a.fingerprint != heads(llama, PROMPTS, ANSWERS, rescale=True).fingerprint
    assert a.fingerprint != heads(llama, PROMPTS, ANSWERS, layers=[0, 1]).fingerprint
    assert a.fingerprint != heads(llama, PROMPTS[:2], ANSWERS[:2]).fingerprint
    assert a.cost(np.ones((3, a.n_features), dtype=bool)).tolist() == [a._tokens] * 3
