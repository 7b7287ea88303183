from pathlib import Path

import pytest

from loopline.settings import get_settings

pytestmark = pytest.mark.unit


def test_settings_are_read_at_call_time(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOOPLINE_PREFECT_PORT", "4321")
    settings = get_settings()
    assert settings.resolved_prefect_api_url == "http://127.0.0.1:4321/api"
    assert settings.resolved_data_root == str(tmp_path / "home" / "data")
    monkeypatch.setenv("LOOPLINE_DATA_ROOT", "s3://bucket/prefix/")
    monkeypatch.setenv("LOOPLINE_LABEL_STUDIO_TOKEN", "sekrit-token")
    settings = get_settings()
    assert settings.resolved_data_root == "s3://bucket/prefix"
    assert "sekrit-token" not in repr(settings)


def test_the_optuna_storage_url_is_a_secret_never_a_parameter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tasks.train import TrainParameters, optuna_storage_url

    assert not any("url" in name or name == "optuna_storage" for name in TrainParameters.model_fields)
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    monkeypatch.delenv("LOOPLINE_OPTUNA_STORAGE", raising=False)
    assert optuna_storage_url(None) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    monkeypatch.setenv("LOOPLINE_OPTUNA_STORAGE", "postgresql://u:hunter2@127.0.0.1/optuna")
    assert optuna_storage_url(None) == "postgresql://u:hunter2@127.0.0.1/optuna"
    assert "hunter2" not in repr(get_settings())
