"""The run directory: a trained model on disk, read and checked as data, without torch.

A run directory holds ``encoder/`` (tokenizer and encoder; a transformer encoder is a
HuggingFace model folder with its fine-tuned weights, so ``AutoModel.from_pretrained(RUN/encoder)``
loads it), ``model.safetensors`` (every other weight: the head, and a BiLSTM encoder's; the label
map in its metadata), ``config.yaml`` (the resolved config), ``labels.json`` (the label map) and
``README.md`` (a model card). It loads without pickle, and reading it never runs code
it names: every ``_target_`` in its config must be one of nerkit's own classes in its own
place (the encoder, the head, the task, the data readers), the config holds plain values only (no
interpolations, no other Hydra keys, no YAML aliases), and Python files in ``encoder/`` may run
only when the caller passes ``trust_remote_code=True``; the file's own setting never decides.
The label map must be the one the weights were trained with (their metadata says), and every file
is held to a size limit (``LIMITS``) before it is parsed. All of this is checked before anything
is built. This module imports no torch (the ONNX predictor reads runs through it); writing
weights and loading them into a model is ``nerkit.weights``.
"""
from __future__ import annotations

import ast
import errno
import functools
import hashlib
import io
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError, safe_open

from nerkit.messages import shorten

WEIGHTS, CONFIG, LABELS, ENCODER_DIR = "model.safetensors", "config.yaml", "labels.json", "encoder"

# What a config may name, by place: a class of nerkit's own package for that place, derived
# from its base class (so a new head, encoder or task needs no entry here), or a reader function
# of nerkit.data. Checked on nerkit's source files, never by importing: nothing a config names is
# imported to check it, and the check needs no torch.
PLACES = {"encoder": ("nerkit.encoders.", "nerkit.encoders.base.Encoder"),
          "head": ("nerkit.heads.", "nerkit.heads.base.Head"),
          "task": ("nerkit.tasks.", "nerkit.tasks.base.Task")}
READER_PACKAGE, READER_PREFIXES = "nerkit.data.", ("read_", "split_")
# Hydra's other instantiate keys change what gets called and how (positional args, partials).
_HYDRA_KEYS = frozenset({"_args_", "_partial_", "_recursive_", "_convert_"})
# Files in encoder/ whose `auto_map` makes transformers import Python from that folder.
_CODE_MAPS = ("config.json", "tokenizer_config.json")
_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the nerkit package
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UnsafeRunError(ValueError):
    """A run directory (or a config) names code that nerkit will not run on its own."""


class RunLimitError(ValueError):
    """A file of a run directory is bigger, or holds more, than a ``Limit`` allows."""


@dataclass(frozen=True)
class Limit:
    """A limit on what a run directory may make nerkit read, checked before parsing; raised with
    the environment variable ``env``."""

    env: str
    default: int
    unit: str

    def value(self) -> int:
        setting = os.environ.get(self.env)
        if setting is None:
            return self.default
        try:
            value = int(setting.replace("_", ""))
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{self.env}={setting!r}: must be a positive whole number")
        return value

    def check(self, number: int, what: str) -> None:
        if number > (limit := self.value()):
            raise RunLimitError(f"{what}: {number:,} {self.unit}, over the limit of {limit:,}; nothing was built. "
                                f"For a run directory you trust, raise the limit: {self.env}={number}")


# A nerkit config.yaml is a few kilobytes, labels.json a few per thousand labels, the weights
# header (tensor index + label map) below a megabyte: the defaults leave a wide margin.
LIMITS = {"config_bytes": Limit("NERKIT_MAX_CONFIG_BYTES", 1 << 20, "bytes"),
          "labels_bytes": Limit("NERKIT_MAX_LABELS_BYTES", 4 << 20, "bytes"),
          "labels": Limit("NERKIT_MAX_LABELS", 10_000, "labels"),
          "weights_header_bytes": Limit("NERKIT_MAX_WEIGHTS_HEADER_BYTES", 16 << 20, "bytes")}


@functools.lru_cache(maxsize=None)
def _module_names(module: str) -> tuple[dict[str, ast.stmt], dict[str, str]] | None:
    """A nerkit module's top-level definitions by name, and its imported names -> dotted names,
    read from its source file (never imported); None if ``module`` is not a nerkit module."""
    parts = module.split(".")
    if parts[0] != "nerkit" or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        return None
    path = _SOURCE_ROOT.joinpath(*parts).with_suffix(".py")
    if not path.is_file():
        path = _SOURCE_ROOT.joinpath(*parts, "__init__.py")
        if not path.is_file():
            return None
    definitions: dict[str, ast.stmt] = {}
    imported: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            definitions[node.name] = node
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            imported.update({a.asname or a.name: a.name for a in node.names})
    return definitions, imported


def _dotted(expression: ast.expr, module: str) -> str | None:
    """The dotted name a base-class expression of ``module`` stands for (None: not a plain name)."""
    if isinstance(expression, ast.Attribute):
        owner = _dotted(expression.value, module)
        return f"{owner}.{expression.attr}" if owner else None
    if not isinstance(expression, ast.Name):
        return None
    definitions, imported = _module_names(module) or ({}, {})
    if expression.id in imported:
        return imported[expression.id]
    return f"{module}.{expression.id}" if expression.id in definitions else expression.id


def _defined(target: str, kind: type) -> ast.stmt | None:
    """The top-level ``kind`` (class or function) definition a dotted name inside nerkit names."""
    module, _, name = target.rpartition(".")
    found = (_module_names(module) or ({}, {}))[0].get(name)
    return found if isinstance(found, kind) else None


def _derives_from(target: str, base: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether the nerkit class ``target`` is ``base`` or derives from it, following its source's bases."""
    if target == base:
        return True
    node = _defined(target, ast.ClassDef)
    if node is None or target in seen:
        return False
    module = target.rpartition(".")[0]
    return any(_derives_from(name, base, seen | {target}) for b in node.bases if (name := _dotted(b, module)))


def target_problem(place: str, target: Any) -> str | None:
    """Why ``target`` may not be named at ``place`` (``encoder``, ``head``, ``task``, ``data.*``), or None."""
    if place in PLACES:
        package, base = PLACES[place]
        kind = f"a subclass of {base} in {package}*"
        if isinstance(target, str) and target.startswith(package) and _derives_from(target, base):
            return None
    elif place.startswith("data."):
        kind = f"a reader function {READER_PACKAGE}*.{{{','.join(p + '*' for p in READER_PREFIXES)}}}"
        if (isinstance(target, str) and target.startswith(READER_PACKAGE)
                and target.rpartition(".")[2].startswith(READER_PREFIXES) and _defined(target, ast.FunctionDef)):
            return None
    else:
        kind = "nothing (only encoder, head, task and data.* may name one)"
    return f"{place}._target_={shorten([target])[1:-1]}: allowed here is {kind}"


def target_problems(cfg: DictConfig) -> list[str]:
    """Every ``_target_`` of ``cfg`` that is not allowed in its place, and every Hydra key."""
    problems: list[str] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{key}[{i}]")
            return
        if not isinstance(node, dict):
            return
        if "_target_" in node and (problem := target_problem(key, node["_target_"])):
            problems.append(problem)
        for name in sorted(_HYDRA_KEYS & node.keys()):
            problems.append(f"{key}.{name}: Hydra instantiate keys other than _target_ are not allowed")
        for name, value in node.items():
            walk(value, f"{key}.{name}" if key else str(name))

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return problems


def read_run(directory: str | Path, key: str, trust_remote_code: bool = False) -> tuple[DictConfig, list[str]]:
    """Check a run directory is complete, safe to build and consistent; return its config and its
    labels (``labels.json[key]``, which the weights' metadata must also hold, in the same order).

    ``trust_remote_code=True`` lets the encoder run Python files from ``encoder/``: pass it only
    for a directory you trust. The returned config's ``encoder.trust_remote_code`` is that argument.
    """
    directory = Path(directory)
    context = f"{directory} is not a complete nerkit run directory"
    _check_exists(directory, context, "it", folder=True)
    for name in (WEIGHTS, CONFIG, LABELS, ENCODER_DIR):
        _check_exists(directory / name, context, name, folder=name == ENCODER_DIR)
    cfg = read_config(directory / CONFIG)
    _check_remote_code(directory, cfg, trust_remote_code)
    labels = _read_labels(directory / LABELS, key)
    trained = _weights_labels(directory / WEIGHTS, key)
    if trained != labels:
        raise ValueError(f"{directory / LABELS} lists {key.replace('_', ' ')} {shorten(labels)}, but "
                         f"{directory / WEIGHTS} was trained with {shorten(trained)}"
                         f"{_first_difference(labels, trained)}; restore the original labels.json")
    for path in sorted((directory / ENCODER_DIR).glob("*.safetensors")):
        _safetensors_header(path)
    return cfg, labels


def read_yaml(path: Path) -> Any:
    """A YAML file nerkit wrote (a run's config, Hydra's records of a job) as an OmegaConf object:
    refused over ``NERKIT_MAX_CONFIG_BYTES`` or with YAML aliases, which a written config never has
    and which let a few lines expand to billions of nodes."""
    data = _read_limited(path, LIMITS["config_bytes"])
    try:
        text = data.decode("utf-8")
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise UnsafeRunError(f"{path}, line {event.start_mark.line + 1}: a YAML alias (*{event.anchor}); "
                                     "nerkit never writes one, and aliases can expand a small file into billions of "
                                     "values, so none are read")
        return OmegaConf.load(io.StringIO(text))
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as err:  # yaml's errors are ValueErrors too
        if isinstance(err, UnsafeRunError):
            raise
        raise ValueError(f"{path}: not a readable config ({err})") from None


def read_config(path: Path) -> DictConfig:
    """A run's ``config.yaml``, refused (before anything is built) when it names code, holds
    interpolations or other Hydra keys, is not a nerkit config, or breaks ``read_yaml``'s limits."""
    cfg = read_yaml(path)
    if not isinstance(cfg, DictConfig) or not isinstance(cfg.get("encoder"), DictConfig):
        raise ValueError(f"{path}: not a nerkit run config (no encoder section)")
    problems = target_problems(cfg)
    # Saved resolved, a run's config has no interpolations; one would read environment
    # variables or call resolvers when the config is used.
    container = OmegaConf.to_container(cfg, resolve=False)
    problems += [f"{key}={shorten([value])[1:-1]}: interpolations are not allowed in a saved run"
                 for key, value in _leaves(container, "") if isinstance(value, str) and "${" in value]
    if problems:
        more = [f"... {len(problems) - 20:,} more"] if len(problems) > 20 else []
        raise UnsafeRunError(f"{path} names code or values nerkit will not load; nothing was built:\n  "
                             + "\n  ".join(problems[:20] + more))
    return cfg


def _check_exists(path: Path, context: str, name: str, folder: bool) -> None:
    """A clear error (``context: name ...``) when ``path`` is missing, a symbolic link loop or not
    the kind of file expected (a folder, or a regular file: never a device or a pipe)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{context}: {name} is a symbolic link loop ({path} leads back to itself)") from None
        if path.is_symlink():
            raise FileNotFoundError(f"{context}: {name} is a symbolic link to {os.readlink(path)}, "
                                    "which does not exist") from None
        raise FileNotFoundError(f"{context}: {name} {'is missing' if name != 'it' else 'does not exist'}") from None
    if folder and not stat.S_ISDIR(mode):
        raise NotADirectoryError(f"{context}: {name} is not a directory")
    if not folder and not stat.S_ISREG(mode):
        raise ValueError(f"{context}: {name} is not a regular file")


def _read_limited(path: Path, limit: Limit) -> bytes:
    """A regular file's bytes, refused before reading when it is bigger than ``limit``."""
    _check_exists(path, str(path.parent), path.name, folder=False)
    limit.check(path.stat().st_size, str(path))
    with open(path, "rb") as f:
        data = f.read(limit.value() + 1)  # a file that grew since its size was checked is still bounded
    limit.check(len(data), str(path))
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) < len(keys):
        raise ValueError(f"the key {next(k for k in keys if keys.count(k) > 1)!r} appears twice in one object")
    return dict(pairs)


def _check_labels(labels: Any, where: str) -> list[str]:
    """A label list: strings, at most ``NERKIT_MAX_LABELS``, none twice."""
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"{where}: not a list of label strings")
    LIMITS["labels"].check(len(labels), where)
    seen: set[str] = set()
    repeated = [label for label in labels if label in seen or seen.add(label)]
    if repeated:
        raise ValueError(f"{where}: labels listed more than once: {shorten(sorted(set(repeated)))}; "
                         "each label must be listed once, or two outputs of the model would share a name")
    return labels


def _read_labels(path: Path, key: str) -> list[str]:
    data = _read_limited(path, LIMITS["labels_bytes"])
    try:
        labels = json.loads(data, object_pairs_hook=_unique_keys)[key]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a nerkit label map ({shorten([str(err)])[1:-1]})") from None
    return _check_labels(labels, f"{path}: {key}")


def _safetensors_header(path: Path) -> dict:
    """A safetensors file's header, its size checked against ``NERKIT_MAX_WEIGHTS_HEADER_BYTES``
    before it is parsed, and the whole file checked readable (not truncated, not corrupt)."""
    _check_exists(path, str(path.parent), path.name, folder=False)
    with open(path, "rb") as f:
        prefix = f.read(8)
    header = int.from_bytes(prefix, "little")
    if len(prefix) == 8 and 8 + header <= path.stat().st_size:  # else: cut off, which safe_open reports
        LIMITS["weights_header_bytes"].check(header, f"{path}: the safetensors header")
    try:
        with safe_open(path, "numpy") as weights:
            return weights.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file, truncated or corrupt ({err})") from None


def _weights_labels(path: Path, key: str) -> list[str]:
    """The label map the weights were saved with (their metadata); a run without one is refused."""
    trained = _safetensors_header(path).get(key)
    if trained is None:
        raise ValueError(
            f"{path} holds no label map in its metadata ({key}), so the order of labels.json cannot be checked "
            "against the weights: a reordered labels.json would silently swap the predicted labels. nerkit writes "
            "the map at every save; if this labels.json is the original one, write it into the weights with "
            f"python -c \"from nerkit.weights import stamp_labels; stamp_labels('{path.parent}')\"")
    try:
        labels = json.loads(trained)
    except ValueError as err:
        raise ValueError(f"{path}: the label map in its metadata is not JSON ({err})") from None
    return _check_labels(labels, f"{path}: the label map in its metadata")


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f" (first difference at position {i}: {shorten([x])[1:-1]} against {shorten([y])[1:-1]})"
    return ""


def _leaves(node: Any, key: str):
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _leaves(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{key}[{i}]")
    else:
        yield key, node


def _check_remote_code(directory: Path, cfg: DictConfig, trust_remote_code: bool) -> None:
    """Refuse a run whose encoder would run Python from encoder/ unless the caller trusts it."""
    if not trust_remote_code:
        hint = (f"loading it would run Python files from {directory / ENCODER_DIR}; if you trust this directory, "
                "pass trust_remote_code=True (command line: trust_remote_code=true)")
        if cfg.encoder.get("trust_remote_code"):
            raise UnsafeRunError(f"{directory / CONFIG} sets encoder.trust_remote_code=true: {hint}")
        for name in _CODE_MAPS:
            path = directory / ENCODER_DIR / name
            try:
                mapping = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            except ValueError as err:
                raise ValueError(f"{path}: invalid JSON ({err})") from None
            if isinstance(mapping, dict) and mapping.get("auto_map"):
                raise UnsafeRunError(f"{path} maps classes to custom code (auto_map): {hint}")
    if "trust_remote_code" in cfg.encoder:
        cfg.encoder.trust_remote_code = trust_remote_code


def write_run_files(directory: Path, cfg: DictConfig, key: str, labels: list[str]) -> None:
    """Write a run's config.yaml (resolved: plain values only) and labels.json (``{key: labels}``)."""
    OmegaConf.save(cfg, directory / CONFIG, resolve=True)
    (directory / LABELS).write_text(json.dumps({key: list(labels)}, ensure_ascii=False, indent=1), encoding="utf-8")


def write_text_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it: a reader never sees half a file.
    The file keeps the mode of the one it replaces; a new one follows the umask (as ``open`` would)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def weights_hash(run_dir: str | Path) -> str:
    """SHA-256 over every weight file of a run directory (model.safetensors and encoder/'s)."""
    run_dir = Path(run_dir)
    digest = hashlib.sha256()
    for path in [run_dir / WEIGHTS, *sorted((run_dir / ENCODER_DIR).glob("*.safetensors"))]:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
