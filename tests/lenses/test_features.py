"""Features lens: segmentation and masking exactly as specified, template after masking, and values
equal to independent computations on tiny real GPT-2 / Llama (chat) / BERT models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spex.errors import SpexInputError
from spex.lenses import features
from spex.lenses.prompt_features import render, segment
from tests.tolerances import approx, assert_close

PROMPT = "The food was not bad, but the service was slow."
TWO_SENTENCES = "I expected to hate it. Yet I loved every minute!\n\nNever again?"


# --------------------------------------------------------------------------------------------- masking
def test_word_and_sentence_segments():
    assert [PROMPT[a:b] for a, b in segment(PROMPT, "word")] == PROMPT.split()
    assert [TWO_SENTENCES[a:b] for a, b in segment(TWO_SENTENCES, "sentence")] == [
        "I expected to hate it.", "Yet I loved every minute!", "Never again?"]
    assert segment(PROMPT, [(4, 8), (14, 20)]) == [(4, 8), (14, 20)]
    assert segment(PROMPT, ["not bad", "slow"]) == [(13, 20), (42, 46)]
    for bad in ([(8, 4)], [(0, 5), (3, 9)], [(0, 999)], ["absent"]):
        with pytest.raises(SpexInputError):
            segment(PROMPT, bad)
    with pytest.raises(SpexInputError, match="unit"):
        segment(PROMPT, "paragraph")


@pytest.mark.parametrize("keep, expected", [
    ("1111111111", "The food was not bad, but the service was slow."),
    ("1110111111", "The food was bad, but the service was slow."),
    ("0111111111", "food was not bad, but the service was slow."),
    ("1111111110", "The food was not bad, but the service was"),
    ("1001000001", "The not slow."),
    ("0000000000", ""),
])
def test_remove_mode_strings(keep, expected):
    mask = np.array([c == "1" for c in keep])
    assert render(PROMPT, segment(PROMPT), mask, None) == expected


def test_remove_keeps_paragraph_breaks_and_context():
    spans = segment(TWO_SENTENCES, "sentence")
    assert render(TWO_SENTENCES, spans, np.array([1, 0, 1], bool), None) == "I expected to hate it.\n\nNever again?"
    assert render(TWO_SENTENCES, spans, np.array([1, 1, 0], bool), None) == "I expected to hate it. Yet I loved every minute!"
    spans = segment(PROMPT, ["not bad", "slow"])  # text outside the spans is context, always kept
    assert render(PROMPT, spans, np.array([0, 1], bool), None) == "The food was, but the service was slow."
    assert render(PROMPT, spans, np.array([1, 0], bool), None) == "The food was not bad, but the service was."


def test_replacement_modes_strings(llama, bert):
    mask = np.array([c == "1" for c in "1101111110"])
    assert render(PROMPT, segment(PROMPT), mask, "[UNK]") == "The food [UNK] not bad, but the service was [UNK]"
    vf = features(bert, PROMPT, mask="unk")
    assert vf.masked_prompt(mask) == "The food [UNK] not bad, but the service was [UNK]"
    vf = features(bert, PROMPT, mask="mask")
    assert vf.masked_prompt(mask) == "The food [MASK] not bad, but the service was [MASK]"
    ids = vf._ids(mask[None])[0]
    assert ids.count(bert.tokenizer.mask_token_id) == 2
    vf = features(llama, PROMPT, mask="___", target=" ok")
    assert vf.masked_prompt(mask) == "The food ___ not bad, but the service was ___"
    vf = features(llama, PROMPT, mask="unk", target=" ok")  # the BPE tokenizer's unk token
    assert vf.masked_prompt(mask) == "The food <|endoftext|> not bad, but the service was <|endoftext|>"
    with pytest.raises(SpexInputError, match="no mask token"):
        features(llama, PROMPT, mask="mask", target=" ok")


def test_template_is_applied_after_masking(llama):
    system = "Answer briefly. Words here are not features."
    vf = features(llama, PROMPT, system=system, target=" fine")
    assert vf.chat and vf.n_features == len(PROMPT.split())
    mask = np.ones(vf.n_features, dtype=bool)
    mask[[0, 3]] = False
    expected = llama.tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": "food was bad, but the service was slow."}],
        tokenize=False, add_generation_prompt=True)
    assert vf.model_input(mask) == expected
    assert expected.startswith("<|im_start|>system\n" + system) and expected.endswith("<|im_start|>assistant\n")
    # default system prompt of the template, untouched by masking
    vf = features(llama, PROMPT, target=" fine")
    assert vf.model_input(np.zeros(vf.n_features, bool)) == (
        "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n")
    # token ids are those of the templated text (the template writes its own special tokens)
    ids = vf._ids(mask[None])[0]
    assert ids == llama.tokenizer(vf.model_input(mask), add_special_tokens=False)["input_ids"]
    assert vf.cost(mask[None])[0] == len(ids) + len(vf.target_ids)


# --------------------------------------------------------------------------------------------- values
def independent_logprob(loaded, text: str, target_ids: list[int], *, special: bool) -> float:
    """Teacher-forced log-prob of target_ids after text: one unpadded forward, no lens code."""
    tok = loaded.tokenizer
    prompt = tok(text, add_special_tokens=special)["input_ids"]
    ids = torch.tensor([prompt + target_ids])
    with torch.no_grad():
        logp = torch.log_softmax(loaded.model(input_ids=ids).logits[0].float(), -1)
    return float(sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(target_ids)))


def greedy(loaded, prompt_ids: list[int], steps: int) -> list[int]:
    """Argmax decoding without a cache, stopping at end-of-sequence."""
    ids = list(prompt_ids)
    eos = loaded.tokenizer.eos_token_id
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == eos:
                break
            ids.append(nxt)
    return ids[len(prompt_ids):]


def test_reference_is_the_greedy_answer_and_full_mask_value_matches(llama):
    vf = features(llama, PROMPT, max_new_tokens=6)
    chat_text = llama.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                                    add_generation_prompt=True)
    prompt_ids = llama.tokenizer(chat_text, add_special_tokens=False)["input_ids"]
    assert vf.target_ids == greedy(llama, prompt_ids, 6) and len(vf.target_ids) > 0
    assert vf.target == llama.tokenizer.decode(vf.target_ids)
    expected = independent_logprob(llama, chat_text, vf.target_ids, special=False)
    assert vf(np.ones((1, vf.n_features), bool))[0] == approx(expected)
    assert vf.full_value == approx(expected)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_masked_values_match_independent_forwards(name, request):
    loaded = request.getfixturevalue(name)
    target = " The answer is yes."
    vf = features(loaded, PROMPT, target=target, mask="remove")
    assert vf.chat == (name == "llama")
    target_ids = loaded.tokenizer(target, add_special_tokens=False)["input_ids"]
    masks = np.random.default_rng(1).random((6, vf.n_features)) < 0.5
    masks[0] = True
    values = vf(masks)
    expected = [independent_logprob(loaded, vf.model_input(m), target_ids, special=not vf.chat) for m in masks]
    assert_close(values, expected)
    assert np.ptp(values) > 1e-3


def test_batch_equals_single_and_one_forward(llama):
    vf = features(llama, TWO_SENTENCES, unit="sentence", target=" yes")
    masks = np.array(np.meshgrid(*[[0, 1]] * 3)).T.reshape(-1, 3).astype(bool)
    calls = []
    handle = llama.model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        batched = vf(masks)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert_close(batched, [vf(m[None])[0] for m in masks])


def test_prefix_cache_gives_the_same_values(llama, gpt2):
    plain = features(llama, PROMPT, target=" The answer is yes.", prefix_cache=False)
    cached = features(llama, PROMPT, target=" The answer is yes.", prefix_cache=True)
    assert cached._prefix is not None and cached._prefix.length >= 8
    assert cached.fingerprint == plain.fingerprint  # same values, so the same store entries
    masks = np.random.default_rng(2).random((9, plain.n_features)) < 0.5
    masks[0] = False
    assert_close(cached(masks), plain(masks))
    assert features(llama, PROMPT, target=" yes")._prefix is not None  # default: on (template prefix)
    assert features(gpt2, PROMPT, target=" yes")._prefix is None  # no shared prefix without a template


def test_classifier_value_is_the_predicted_class_logit(bert):
    vf = features(bert, PROMPT)
    with torch.no_grad():
        logits = bert.model(**bert.tokenizer(PROMPT, return_tensors="pt")).logits[0]
    predicted = int(logits.argmax())
    assert vf.target_class == predicted and vf.target == bert.labels[predicted]
    assert vf(np.ones((1, vf.n_features), bool))[0] == approx(float(logits[predicted]))
    named = features(bert, PROMPT, target="negative", mask="unk")
    masks = np.random.default_rng(3).random((5, named.n_features)) < 0.5
    with torch.no_grad():
        expected = [float(bert.model(**bert.tokenizer(named.masked_prompt(m), return_tensors="pt")).logits[0, 0])
                    for m in masks]
    assert_close(named(masks), expected)
    assert named.fingerprint != vf.fingerprint
    with pytest.raises(SpexInputError, match="not a class"):
        features(bert, PROMPT, target="neutral")
    with pytest.raises(SpexInputError, match="system"):
        features(bert, PROMPT, system="be nice")


def test_fingerprint_is_stable_and_complete(llama):
    base = features(llama, PROMPT, target=" yes")
    assert base.fingerprint == features(llama, PROMPT, target=" yes").fingerprint
    others = [features(llama, PROMPT, target=" no"), features(llama, PROMPT, target=" yes", unit="sentence"),
              features(llama, PROMPT, target=" yes", mask="unk"), features(llama, PROMPT, target=" yes", system="x"),
              features(llama, PROMPT + " Really.", target=" yes")]
    assert len({base.fingerprint, *(o.fingerprint for o in others)}) == 1 + len(others)
    d = base.describe()
    assert d["lens"] == "features" and d["n_features"] == base.n_features and d["target"] == " yes"
