"""A context audit through the Prefect flow on a tiny real Llama with a chat template: metadata DB rows,
MLflow runs with their artifacts, and a report that shows the passages shaded and the interacting ones
linked; with ``privacy.redact_text`` none of the passages' text reaches the report or the DB."""

from __future__ import annotations

from pathlib import Path

import pytest

from spex.data.context import load_context_questions


@pytest.fixture(scope="module")
def tiny_chat_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lens suite's tiny Llama (grouped-query attention, ChatML template), saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.lenses.conftest import INIT, bpe_tokenizer

    torch.manual_seed(5)
    tok = bpe_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                      tie_word_embeddings=False, initializer_range=INIT, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    folder = tmp_path_factory.mktemp("chat-llama")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def context_spec(model: Path, **changes: object) -> dict:
    rows = {r["id"]: r for r in load_context_questions()}
    subjects = [rows["flag-colour"], rows["painting-city"]]  # 4 and 5 passages of the bundled set
    spec = {"model": str(model), "lens": "context", "lens_options": {"max_new_tokens": 4}, "subjects": subjects,
            "holdout": 16, "removal_r": 2, "ranking": {"index": "fbii", "order": 2, "top_k": 5}}
    spec.update(changes)
    return spec


def test_context_audit_records_rows_runs_and_a_report(flow_env, tiny_chat_llama, tmp_path):
    from mlflow import MlflowClient

    from flows.audit import audit
    from spex import settings
    from spex.records.metadata import MetadataStore

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    result = audit(context_spec(tiny_chat_llama, gates={"faithfulness_min": 0.99}), db_url=db)
    assert result.passed is True  # n = 4, 5: the budget covers every mask, so the spectrum is exact
    rows = {r["id"]: r for r in load_context_questions()}
    with MetadataStore(db) as store:
        record = store.get_audit(result.audit_id)
        assert record.status == "succeeded" and record.spec["lens"] == "context"
        subjects = {s.subject.key: s for s in record.subjects}
        assert set(subjects) == {"flag-colour", "painting-city"}
        for key, s in subjects.items():
            docs = rows[key]["documents"]
            assert s.subject.lens == "context" and s.subject.n_features == len(docs)
            assert [label.rstrip("…") for label in s.subject.labels] == [
                " ".join(d.split()[:6]) for d in docs]  # the first words of each passage
            assert s.validation.n_heldout == 16 and s.validation.heldout_r2 == pytest.approx(1.0, abs=1e-6)
            assert {a.role for a in s.ablation_sets} == {"train", "holdout"}
            assert {"fbii", "shapley"} <= set(s.interaction_counts)
            assert s.metrics["masks_computed"] + s.metrics["masks_from_store"] > 0

    client = MlflowClient(settings.mlflow_tracking_uri())
    parent = client.get_run(result.mlflow_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["lens"] == "context"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["spex.subject"] for c in children) == ["flag-colour", "painting-city"]
    assert all("heldout_r2" in c.data.metrics for c in children)

    html = Path(result.report["html"]).read_text()
    assert 'class="sources"' in html and 'class="arc"' in html and "question: <b>" in html
    for key in ("flag-colour", "painting-city"):
        assert rows[key]["question"] in html
        for doc in rows[key]["documents"]:
            assert doc in html


def test_redacted_context_audit_keeps_the_passages_out(flow_env, tiny_chat_llama, tmp_path):
    from flows.audit import audit
    from spex.records.metadata import MetadataStore

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    result = audit(context_spec(tiny_chat_llama, privacy={"redact_text": True}, seed=3), db_url=db)
    html = Path(result.report["html"]).read_text()
    rows = {r["id"]: r for r in load_context_questions()}
    texts = [rows[k]["question"] for k in ("flag-colour", "painting-city")] + [
        d for k in ("flag-colour", "painting-city") for d in rows[k]["documents"]]
    with MetadataStore(db) as store:
        record = store.get_audit(result.audit_id)
        stored = str(record.spec) + "".join(str(s.subject.labels) + str(s.subject.description) for s in record.subjects)
    for text in texts:
        assert text not in html and text not in stored
    assert "f0" in html
