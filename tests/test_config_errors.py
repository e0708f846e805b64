"""load_config: a config path that is not a readable UTF-8 TOML file is a ConfigError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from training.config import load_config
from training.errors import ConfigError


@dataclass
class TinyModelConfig:
    n_items: int
    dim: int = 8


def test_a_folder_or_a_non_utf8_file_as_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder; give a TOML file"):
        load_config(tmp_path, TinyModelConfig)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[model]\ndim = 8\n# \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"binary\.toml: not a TOML text file \(invalid UTF-8"):
        load_config(binary, TinyModelConfig)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot read config file .*x\.toml: Not a directory"):
        load_config(tmp_path / "file" / "x.toml", TinyModelConfig)
    good = tmp_path / "good.toml"
    good.write_text("[model]\ndim = 16\n")
    assert load_config(good, TinyModelConfig).model == {"dim": 16}
