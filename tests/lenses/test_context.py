"""Context lens: only the sources of the context are masked (the template, the question and the chat
template stay whole), labels read as the passages' first words, and values equal independent
teacher-forced forwards on the tiny real Llama (chat template) of ``conftest.py``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from spex.errors import SpexInputError
from spex.lenses import context
from spex.lenses.registrations.context import label, labels, sources
from tests.lenses.test_features import independent_logprob
from tests.tolerances import approx, assert_close

QUESTION = "What is the capital of France?"
DOCS = ["The capital of France is Paris.", "The capital of Italy is Rome.", "The food was not bad at all."]
LONG = ("The food was not bad. The service was slow!\n\nI expected to hate the movie. Yet I loved every "
        "minute of it.\n\nNever again?")


def all_masks(n: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)


def chat(loaded, content: str) -> str:
    return loaded.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                add_generation_prompt=True)


# --------------------------------------------------------------------------------------------- rendering
def test_only_the_context_is_masked(llama):
    vf = context(llama, QUESTION, DOCS, target=" Paris")
    assert vf.n_features == 3 and vf.chat
    for mask in all_masks(3):
        kept = "\n\n".join(d for d, k in zip(DOCS, mask) if k)
        expected = f"Context: {kept}\n\nQuery: {QUESTION}"  # ContextCite's template, by hand
        assert vf.masked_prompt(mask) == expected
        text = vf.model_input(mask)
        assert text == chat(llama, expected)  # the chat template applied after masking, untouched
        assert text.count(QUESTION) == 1 and text.endswith("<|im_start|>assistant\n")
        assert text.startswith("<|im_start|>system\nYou are a tiny test model.<|im_end|>\n<|im_start|>user\nContext: ")
        for d, k in zip(DOCS, mask):
            assert (d in text) == bool(k)


def test_question_first_template_and_separator(llama):
    vf = context(llama, QUESTION, DOCS, target=" Paris", template="Q: {question}\nSources:\n{context}\nA:",
                 separator="\n- ")
    assert vf.masked_prompt(np.array([1, 0, 1], bool)) == f"Q: {QUESTION}\nSources:\n{DOCS[0]}\n- {DOCS[2]}\nA:"
    assert vf.masked_prompt(np.zeros(3, bool)) == f"Q: {QUESTION}\nSources:\n\nA:"
    # the question precedes the context, so the shared prefix (the KV cache) holds it too
    plain = context(llama, QUESTION, DOCS, target=" Paris")
    assert vf._prefix is not None and plain._prefix is not None and vf._prefix.length > plain._prefix.length
    with pytest.raises(SpexInputError, match="template"):
        context(llama, QUESTION, DOCS, target=" Paris", template="no placeholder {question}")


def test_sentences_of_a_long_context_keep_its_whitespace(llama):
    vf = context(llama, "Was it good?", LONG, unit="sentence", target=" yes")
    assert [t for _, t in sources(LONG, "sentence", "\n\n")] == vf.source_texts == [
        "The food was not bad.", "The service was slow!", "I expected to hate the movie.",
        "Yet I loved every minute of it.", "Never again?"]
    assert vf.masked_prompt(np.ones(5, bool)) == f"Context: {LONG}\n\nQuery: Was it good?"
    assert vf.masked_prompt(np.array([1, 0, 1, 1, 0], bool)) == (
        "Context: The food was not bad.\n\nI expected to hate the movie. Yet I loved every minute of it."
        "\n\nQuery: Was it good?")
    paragraphs = context(llama, "Was it good?", LONG, unit="paragraph", target=" yes")
    assert paragraphs.n_features == 3 and paragraphs.source_texts[2] == "Never again?"


def test_labels_are_the_first_words():
    assert label("Mira Tolsen was born in the harbour city of Brevik.") == "Mira Tolsen was born in the…"
    assert label("Short one.") == "Short one."
    assert label("Supercalifragilisticexpialidocious-and-more-and-more-and-more words").endswith("…")
    assert len(label("x" * 200)) <= 48
    assert labels(["Same start here and then more a", "Same start here and then more b", "Other"]) == [
        "Same start here and then more… (#0)", "Same start here and then more… (#1)", "Other"]


def test_fingerprint_names_the_lens_and_its_inputs(llama):
    a = context(llama, QUESTION, DOCS, target=" Paris")
    assert a.fingerprint == context(llama, QUESTION, DOCS, target=" Paris", prefix_cache=False).fingerprint
    assert a.fingerprint != context(llama, QUESTION + " ", DOCS, target=" Paris").fingerprint
    assert a.fingerprint != context(llama, QUESTION, DOCS[::-1], target=" Paris").fingerprint
    assert a.describe()["lens"] == "context" and a.describe()["sources"] == 3
    assert a.batch_tokens == 8192.0


# --------------------------------------------------------------------------------------------- values
def test_full_mask_value_is_the_teacher_forced_log_prob_of_the_greedy_answer(llama):
    vf = context(llama, QUESTION, DOCS, max_new_tokens=6)
    content = f"Context: {DOCS[0]}\n\n{DOCS[1]}\n\n{DOCS[2]}\n\nQuery: {QUESTION}"
    prompt_ids = llama.tokenizer(chat(llama, content), add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # greedy decoding by hand, no cache
        ids = list(prompt_ids)
        for _ in range(6):
            nxt = int(llama.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == llama.tokenizer.eos_token_id:
                break
            ids.append(nxt)
    assert vf.target_ids == ids[len(prompt_ids):] and vf.target_ids
    expected = independent_logprob(llama, chat(llama, content), vf.target_ids, special=False)
    assert vf.full_value == approx(expected)
    assert vf(np.ones((1, 3), bool))[0] == approx(expected)


@pytest.mark.parametrize("prefix_cache", [False, True])
def test_every_mask_matches_an_independent_forward(llama, prefix_cache):
    target = " The capital is Paris."
    vf = context(llama, QUESTION, DOCS, target=target, prefix_cache=prefix_cache)
    assert (vf._prefix is not None) == prefix_cache
    target_ids = llama.tokenizer(target, add_special_tokens=False)["input_ids"]
    masks = all_masks(3)
    expected = [independent_logprob(llama, chat(llama, "Context: " + "\n\n".join(d for d, k in zip(DOCS, m) if k)
                                                 + f"\n\nQuery: {QUESTION}"), target_ids, special=False) for m in masks]
    values = vf(masks)
    assert_close(values, expected)
    assert np.ptp(values) > 1e-3  # the passages move the value
    costs = vf.cost(masks)
    assert costs[-1] == costs.max() and costs[0] == costs.min()  # the full context is the longest row


def test_refuses_a_classifier_and_an_empty_question(bert, llama):
    with pytest.raises(SpexInputError, match="causal LM"):
        context(bert, QUESTION, DOCS)
    with pytest.raises(SpexInputError) as info:
        context(llama, "  ", DOCS, target=" x")
    assert info.value.field == "question"


# --------------------------------------------------------------------------------------------- bundled data
def test_bundled_questions_are_valid_subjects_and_the_demo_uses_them():
    from flows.demo import demo_spec
    from spex.audit.spec import load_spec, validate_spec
    from spex.data.context import load_context_questions

    rows = load_context_questions()
    spec = validate_spec({"model": "builtin:smollm2-135m-instruct", "lens": "context", "subjects": rows})
    sizes = [len(s.documents) for s in spec.subjects]
    assert len(rows) == 15 and sum(4 <= k <= 8 for k in sizes) == 14 and sum(20 <= k <= 50 for k in sizes) == 1
    for s in spec.subjects:
        assert len(s.expect.needs) == 2 and all(0 <= i < len(s.documents) for i in s.expect.needs)
        assert s.expect.kind in ("bridge", "redundant") and s.expect.answer
    assert {s.expect.kind for s in spec.subjects} == {"bridge", "redundant"}
    assert len({tuple(s.expect.needs) for s in spec.subjects}) > 5  # the needed passages sit at varied places
    demo = load_spec(demo_spec("smollm2-context.yaml"))
    demo.check_offline()
    by_id = {r["id"]: r for r in rows}
    for s in demo.subjects:
        assert (s.question, s.documents) == (by_id[s.id]["question"], by_id[s.id]["documents"])
