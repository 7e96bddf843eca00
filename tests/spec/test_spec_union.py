"""The spec's lens dispatch is pydantic's (a discriminated union on ``lens``) and its errors name the
spec's own fields; the lens registry is the one place that knows the lenses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spex.audit.spec import SPEC_TYPES, AuditSpec, SpecError, load_spec, validate_spec
from spex.lenses import registry

FEATURES = {"model": "builtin:minilm-sentiment", "lens": "features", "subjects": [{"id": "a", "prompt": "x y"}]}
HEADS = {**FEATURES, "lens": "heads", "subjects": [{"id": "t", "prompts": ["a b", "c"], "answers": ["x", "y"]}]}
DATA = {**FEATURES, "lens": "data", "subjects": [{"id": "d", "text": "good", "label": "pos"}]}


def error_of(data: dict) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_spec(data)
    assert "\n" not in str(info.value) and "fix:" in str(info.value)
    return info.value


@pytest.mark.parametrize("data", [FEATURES, HEADS, DATA], ids=lambda d: d["lens"])
def test_pydantic_picks_the_lens_models(data: dict) -> None:
    spec = validate_spec(data)
    lens = registry.get(data["lens"])
    assert isinstance(spec, AuditSpec) and type(spec) is SPEC_TYPES[data["lens"]] and spec.registration is lens
    assert isinstance(spec.options, lens.options) and all(isinstance(s, lens.subject) for s in spec.subjects)
    assert validate_spec(spec.public_dict()) == spec  # what Prefect parameters carry validates back to the same spec


def test_default_options_and_batch_come_from_the_registration() -> None:
    spec = validate_spec(DATA)
    assert spec.options.train == "builtin:sentiment" == registry.get("data").default_options["train"]
    assert validate_spec({**DATA, "lens_options": None}).options == spec.options
    assert spec.batch.max_batch == registry.get("data").max_batch


@pytest.mark.parametrize("data, field, says", [
    ({**HEADS, "subjects": [{"id": "t", "prompts": ["a", "b"], "answers": ["x"]}]}, "subjects[0]", "one answer per prompt"),
    ({**HEADS, "subjects": [{"id": "t", "prompts": [1], "answers": ["x"]}]}, "subjects[0].prompts[0]", "valid string"),
    ({**FEATURES, "subjects": [{"id": "a", "prompt": "x", "target": [1]}]}, "subjects[0].target", "got list"),
    ({**FEATURES, "subjects": ["hello"]}, "subjects[0]", "subjects: {file: subjects.jsonl}"),
    ({**DATA, "lens_options": {"train": [{"text": "", "label": 1}]}}, "lens_options.train[0].text", "at least 1"),
    ({**FEATURES, "budget": 10.5}, "budget", "fractional part"),
    ({**FEATURES, "budget": "lots"}, "budget", "valid integer"),
    ({**FEATURES, "gates": {"forbidden": [[]]}}, "gates.forbidden", "entry 0 is empty"),
    ({**FEATURES, "lens_options": ["word"]}, "lens_options", "expected a mapping of features options"),
    ({**HEADS, "lens_options": 3}, "lens_options", "expected a mapping of heads options"),
])
def test_error_locations_are_the_spec_fields(data: dict, field: str, says: str) -> None:
    error = error_of(data)
    assert error.field == field and str(error).startswith(f"spec field `{field}`") and says in str(error), str(error)


def test_did_you_mean_looks_at_the_chosen_lens_only() -> None:
    # a field of another lens says whose it is and what this lens takes (issue 16 #1)
    error = error_of({**HEADS, "subjects": [{"id": "t", "prompt": "a", "answers": ["x"]}]})
    assert "`prompt` belongs to the features lens; the heads lens takes `prompts`" in str(error)
    assert "fix: write `prompts` instead of `prompt`" in str(error)
    error = error_of({**HEADS, "lens_options": {"unit": "word"}})  # a features option given to the heads lens
    assert error.field == "lens_options.unit" and "the heads lens's options are layers, mode, rescale, reference, chat" in str(error)
    assert "did you mean `label`?" in str(error_of({**DATA, "lens_options": {"train": [{"text": "a", "lable": 1}]}}))


def test_unknown_and_missing_lens_name_the_registered_lenses() -> None:
    names = ", ".join(registry.names())
    assert str(error_of({**FEATURES, "lens": "feature"})) == (
        f"spec field `lens`: unknown lens 'feature'; fix: use one of: {names} (did you mean features?)")
    missing = error_of({k: v for k, v in FEATURES.items() if k != "lens"})
    assert missing.field == "lens" and str(missing) == f"spec field `lens` is missing; fix: use one of: {names}"


def test_a_validator_that_knows_its_field_names_it() -> None:
    error = error_of({**FEATURES, "gates": {"forbidden": ["x"]}, "privacy": {"redact_text": True}})
    assert error.field == "gates.forbidden" and "privacy.redact_text hides" in str(error)


def test_a_training_file_resolves_against_the_spec_folder_and_a_bad_row_names_it(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "pos"}\n{"text": "", "label": "neg"}\n')
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**DATA, "budget": 64, "lens_options": {"train": "train.jsonl"}}))
    spec = load_spec(path)
    assert spec.options.train == str(tmp_path / "train.jsonl")
    with pytest.raises(SpecError) as info:
        spec.check_offline()  # n comes from the training set, before any model loads
    assert info.value.field == "lens_options.train[1].text", str(info.value)


def test_the_features_lens_counts_n_before_a_model_loads() -> None:
    with pytest.raises(SpecError) as info:
        validate_spec({**FEATURES, "budget": 3, "subjects": [{"id": "a", "prompt": "w " * 30}]}).check_offline()
    assert info.value.field == "budget" and "subject 'a' with n=30 features" in str(info.value)
    sentences = validate_spec({**FEATURES, "lens_options": {"unit": "sentence"}, "subjects": [{"id": "a", "prompt": "A b. C d."}]})
    assert registry.get("features").count_features(sentences.options, sentences.subjects[0]) == 2
    assert registry.get("heads").count_features(None, None) is None  # only the loaded model knows its heads


def test_lens_versions_is_the_pipeline_cache_key_string() -> None:
    import spex

    expected = ";".join([f"spex={spex.__version__}"] + [f"{r.name}={r.version}" for r in registry.registrations()])
    assert registry.lens_versions() == expected == f"spex={spex.__version__};features=1;heads=1;data=1;context=1"


def test_spec_and_registry_import_without_torch() -> None:
    code = ("import sys, spex.audit.spec, spex.lenses, spex.lenses.registry\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_lens_functions_and_modules_do_not_collide() -> None:
    code = ("import spex\n"
            "from spex.lenses.prompt_features import FeatureLens, render, segment\n"
            "import spex.lenses.attention_heads, spex.lenses.training_data, spex.lenses.context_passages\n"
            "print([getattr(spex.lenses, n).__module__ for n in ('features', 'heads', 'data', 'context')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([registry.get(n).implementation for n in ("features", "heads", "data", "context")])
