"""MLflow registry URIs -> a local Hugging Face folder (MLflow is imported here only, lazily).

``models:/name/3`` and ``models:/name@alias`` are resolved to a concrete version through the registry
client first, so the identity names the version an alias pointed to *at load time* (an alias moving
later does not silently change what an audit measured). The artifacts are downloaded once into the
data dir (keyed by tracking server, name, version); a local file store is used in place.

Layouts accepted inside the artifact: a folder with ``config.json`` at any depth (the shallowest wins):
``mlflow.log_artifacts(save_pretrained_dir, "model")`` + ``register_model("runs:/<run>/model", name)``,
or the ``mlflow.transformers`` flavor (``model/`` with the weights, ``components/tokenizer/``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from spex.content import bytes_digest
from spex.errors import SpexInputError
from spex.models.identity import folder_digest
from spex.settings import data_dir, mlflow_tracking_uri

_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "vocab.json")


def find_model_folder(root: Path) -> Path:
    """The shallowest folder under ``root`` holding ``config.json`` (a Hugging Face model)."""
    root = Path(root)
    candidates = sorted((p.parent for p in root.rglob("config.json")), key=lambda p: (len(p.parts), str(p)))
    for folder in candidates:
        if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or (folder / "model.safetensors.index.json").exists():
            return folder
    raise SpexInputError(
        f"the MLflow artifact at {root} holds no Hugging Face model folder (config.json + weights); log the folder "
        f"written by save_pretrained with mlflow.log_artifacts(folder, 'model') or use mlflow.transformers.log_model"
    )


def _merge_tokenizer(model_folder: Path, root: Path) -> None:
    """The transformers flavor stores the tokenizer apart (``components/tokenizer``): put it beside the weights."""
    if any((model_folder / f).exists() for f in _TOKENIZER_FILES):
        return
    for candidate in sorted(root.rglob("tokenizer_config.json"), key=lambda p: len(p.parts)):
        for f in candidate.parent.iterdir():
            if f.is_file() and not (model_folder / f.name).exists():
                shutil.copy2(f, model_folder / f.name)
        return


def resolve(uri: str, *, tracking_uri: str | None = None, registry_uri: str | None = None
            ) -> tuple[Path, str, dict[str, Any]]:
    """(local folder, identity, source metadata) for a ``models:/`` or ``runs:/`` URI."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking = tracking_uri or mlflow_tracking_uri()
    registry = registry_uri or tracking
    client = MlflowClient(tracking_uri=tracking, registry_uri=registry)
    source: dict[str, Any] = {"uri": uri}
    if uri.startswith("models:/"):
        match = _MODELS.match(uri)
        floating = re.match(r"^models:/(?P<name>[^/@]+)/(?P<word>latest|[A-Za-z]+)/?$", uri)
        if not match and floating:
            # MLflow reads models:/<name>/latest (or a stage) as whatever version is newest now: an audit
            # must say which version it audited, and a rerun must audit the same one.
            versions = _known_versions(client, floating["name"])
            newest = f" (the newest now is {versions[-1]}: models:/{floating['name']}/{versions[-1]})" if versions else ""
            raise SpexInputError(
                f"{uri} names no fixed version: {floating['word']!r} moves when a version is registered, and spex "
                f"audits one version; fix: write models:/<name>/<version>{newest} or pin an alias, models:/<name>@<alias>",
                field="model")
        if not match:
            raise SpexInputError(f"{uri} is not a registry URI; fix: write models:/<name>/<version> or "
                                 f"models:/<name>@<alias>", field="model")
        name = match["name"]
        try:
            if match["alias"]:
                mv = client.get_model_version_by_alias(name, match["alias"])
            else:
                mv = client.get_model_version(name, match["version"])
        except MlflowException as exc:
            versions = _known_versions(client, name)
            what = f"alias {match['alias']!r}" if match["alias"] else f"version {match['version']}"
            raise SpexInputError(
                f"the MLflow registry at {registry} has no {what} of model {name!r}"
                + (f"; its versions are {versions}" if versions else "; no registered model has that name")
                + "; fix: check the name and version, or point MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI at the "
                "right server"
            ) from exc
        source.update(name=mv.name, version=str(mv.version), run_id=mv.run_id, model_source=mv.source)
        # The version's own artifact location: a models:/ URI would be resolved against MLflow's global
        # registry setting, not the one given here.
        artifact_uri = client.get_model_version_download_uri(mv.name, mv.version)
        key = f"{mv.name}/{mv.version}"
        identity_prefix = f"mlflow:{mv.name}/{mv.version}"
    else:
        artifact_uri, key, identity_prefix = uri, uri[len("runs:/"):], f"mlflow:{uri}"
    server = bytes_digest(registry, size=6)  # a short folder name per registry server
    dst = data_dir() / "models" / "mlflow" / server / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    try:
        if dst.exists() and any(dst.rglob("config.json")):
            local = dst
        else:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst),
                                                             tracking_uri=tracking, registry_uri=registry))
    except MlflowException as exc:
        raise SpexInputError(f"could not download the artifacts of {uri} from {tracking}: {exc.message}") from exc
    folder = find_model_folder(local)
    _merge_tokenizer(folder, local)
    return folder, f"{identity_prefix}#{folder_digest(folder)}", source


def _known_versions(client: Any, name: str) -> list[str]:
    try:
        return sorted((str(v.version) for v in client.search_model_versions(f"name='{name}'")), key=int)
    except Exception:  # listing is only for the error message
        return []
