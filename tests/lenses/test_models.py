"""spex.models.load: folders, identities, clear errors, and MLflow registry URIs against a real
temporary local registry (SQLite tracking store in tmp_path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from spex.errors import SpexInputError
from spex.models import folder_digest, load, resolve_device, resolve_dtype
from spex.models.registry import find_model_folder
from tests.tolerances import assert_close


def logits_of(loaded, text="The food was not bad") -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(**loaded.tokenizer(text, return_tensors="pt")).logits


def assert_same_outputs(a, b) -> None:
    """Two loads of the same weights compute the same logits (to float32 rounding)."""
    assert_close(logits_of(a).numpy(), logits_of(b).numpy())


def test_kinds_devices_and_dtypes(gpt2, llama, bert):
    assert (gpt2.kind, llama.kind, bert.kind) == ("causal-lm", "causal-lm", "classifier")
    assert bert.labels == ["negative", "positive"] and bert.class_index("POSITIVE") == 1
    for m in (gpt2, llama, bert):
        assert m.device.type == "cpu" and m.dtype == torch.float32
        assert not m.model.training and not any(p.requires_grad for p in m.model.parameters())
        assert m.identity.startswith("folder:") and json.dumps(m.describe())
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(SpexInputError, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))


def test_encoder_kind_override(bert_dir):
    enc = load(bert_dir, kind="encoder", device="cpu")
    assert enc.kind == "encoder" and type(enc.model).__name__ == "BertModel"


def test_a_head_the_checkpoint_lacks_is_refused(bert_dir, gpt2_dir):
    """transformers would load the classifier under a causal-LM head initialised at random (issue 16, #13)."""
    with pytest.raises(SpexInputError, match="classifier checkpoint .* no causal-lm head") as refused:
        load(bert_dir, kind="causal-lm", device="cpu")
    assert refused.value.field == "kind"
    with pytest.raises(SpexInputError, match="no classifier head"):
        load(gpt2_dir, kind="classifier", device="cpu")
    assert load(bert_dir, kind="classifier", device="cpu").kind == "classifier"  # its own head: fine


def test_identity_is_a_content_digest(gpt2_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(gpt2_dir, copy)
    assert folder_digest(copy) == folder_digest(gpt2_dir)  # content, not location
    assert load(copy, device="cpu").identity == load(gpt2_dir, device="cpu").identity
    cfg = json.loads((copy / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 1e-3
    (copy / "config.json").write_text(json.dumps(cfg))
    assert folder_digest(copy) != folder_digest(gpt2_dir)


NO_NETWORK = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args)[:120])
    raise OSError("no network in this test")
socket.socket.connect = socket.create_connection = refuse
from spex.models import load
for folder in sys.argv[1:]:
    load(folder, device="cpu")
print(attempts)
"""


def test_loading_a_folder_opens_no_connection_even_online(gpt2_dir, bert_dir, lens_data_dir):
    """Loading reads local files only, whether or not an entry point set HF_HUB_OFFLINE."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["SPEX_DATA_DIR"] = str(lens_data_dir)
    out = subprocess.run([sys.executable, "-c", NO_NETWORK, str(gpt2_dir), str(bert_dir)], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_clear_errors(tmp_path, gpt2_dir):
    with pytest.raises(SpexInputError, match="does not exist"):
        load(tmp_path / "nowhere")
    with pytest.raises(SpexInputError, match="does not exist"):
        load("./models/nowhere")
    with pytest.raises(SpexInputError, match="local Hugging Face cache"):
        load("someone/not-cached-model")
    with pytest.raises(SpexInputError, match="builtin:smollm2-135m-instruct"):
        load("builtin:gpt5")
    with pytest.raises(SpexInputError, match="config.json"):
        load(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(SpexInputError, match="gguf"):
        load(tmp_path / "weights.bin")
    remote = tmp_path / "remote"
    shutil.copytree(gpt2_dir, remote)
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SpexInputError, match="trust_remote_code=True"):
        load(remote)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, gpt2_dir, bert_dir):
    """A real MLflow registry (SQLite) with two versions of a tiny GPT-2 and one BERT."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("models", artifact_location=(root / "artifacts").as_uri())
    versions = []
    for folder, name in ((gpt2_dir, "tiny-gpt2"), (gpt2_dir, "tiny-gpt2"), (bert_dir, "tiny-bert")):
        run = client.create_run(exp)
        client.log_artifacts(run.info.run_id, str(folder), "model")
        client.set_terminated(run.info.run_id)
        if name not in [m.name for m in client.search_registered_models()]:
            client.create_registered_model(name)
        versions.append(client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id))
    client.set_registered_model_alias("tiny-gpt2", "champion", versions[1].version)
    mlflow.set_tracking_uri(None)  # leave no global state behind
    return {"uri": uri, "run_id": versions[0].run_id}


def test_registry_version_and_alias(registry, gpt2):
    run_id, registry = registry["run_id"], registry["uri"]
    v1 = load("models:/tiny-gpt2/1", tracking_uri=registry, device="cpu")
    champion = load("models:/tiny-gpt2@champion", tracking_uri=registry, device="cpu")
    assert v1.kind == "causal-lm" and v1.source["version"] == "1"
    assert champion.source["version"] == "2" and champion.uri == "models:/tiny-gpt2@champion"
    assert v1.identity.startswith("mlflow:tiny-gpt2/1#") and champion.identity.startswith("mlflow:tiny-gpt2/2#")
    assert_same_outputs(v1, gpt2)
    assert_same_outputs(champion, gpt2)
    again = load("models:/tiny-gpt2/1", tracking_uri=registry, device="cpu")  # served from the local copy
    assert again.identity == v1.identity and again.path == v1.path
    by_run = load(f"runs:/{run_id}/model", tracking_uri=registry, device="cpu")
    assert by_run.identity.split("#")[1] == v1.identity.split("#")[1]
    bert = load("models:/tiny-bert/1", tracking_uri=registry, device="cpu")
    assert bert.kind == "classifier" and bert.labels == ["negative", "positive"]


def test_registry_errors(registry):
    registry = registry["uri"]
    with pytest.raises(SpexInputError, match=r"no version 7 of model 'tiny-gpt2'; its versions are \['1', '2'\]"):
        load("models:/tiny-gpt2/7", tracking_uri=registry)
    with pytest.raises(SpexInputError, match="alias 'staging'"):
        load("models:/tiny-gpt2@staging", tracking_uri=registry)
    with pytest.raises(SpexInputError, match="no registered model has that name"):
        load("models:/missing/1", tracking_uri=registry)
    with pytest.raises(SpexInputError, match="registry URI"):
        load("models:/tiny-gpt2/latest/x", tracking_uri=registry)


def test_transformers_flavor_layout(tmp_path, gpt2_dir):
    """mlflow.transformers keeps weights in model/ and the tokenizer in components/tokenizer/."""
    from spex.models.registry import _merge_tokenizer

    root = tmp_path / "artifact"
    (root / "model").mkdir(parents=True)
    (root / "components" / "tokenizer").mkdir(parents=True)
    for f in gpt2_dir.iterdir():
        dest = "components/tokenizer" if f.name.startswith(("tokenizer", "special", "vocab", "merges")) else "model"
        shutil.copy2(f, root / dest / f.name)
    (root / "MLmodel").write_text("flavors: {}\n")
    folder = find_model_folder(root)
    assert folder == root / "model"
    _merge_tokenizer(folder, root)
    loaded = load(folder, device="cpu")
    assert_same_outputs(loaded, load(gpt2_dir, device="cpu"))


def test_bundled_data():
    from spex.data import head_tasks, load_head_task, load_prompts, load_sentiment
    from spex.models.builtins import sentiment_data

    rows = load_sentiment()
    assert len(rows) == 300 and len({r["text"] for r in rows}) == 300
    for label in ("positive", "negative"):
        assert sum(r["label"] == label for r in rows) == 150
        assert sum(r["label"] == label and r["split"] == "test" for r in rows) == 30
    negation_or_contrast = [r for r in rows if any(w in r["text"].lower().split() for w in ("not", "but", "never", "no"))
                            or "n't" in r["text"]]
    assert len(negation_or_contrast) > 120
    train, labels = sentiment_data("train")
    assert len(train) == 240 and sorted(set(labels)) == [0, 1]
    assert len(sentiment_data("train", "no-negation")[0]) < 200 and len(sentiment_data("train", "half")[0]) == 120
    assert sentiment_data("test", "half") == sentiment_data("test")  # variants never touch the held-out split
    assert len(load_prompts("smollm2")) == 3 and all(20 <= len(p.split()) <= 60 for p in load_prompts("smollm2"))
    assert len(load_prompts("sentiment")) == 5 and "capitals" in head_tasks()
    prompts, answers = load_head_task("capitals")
    assert len(prompts) == len(answers) >= 8 and all(a.startswith(" ") for a in answers)
