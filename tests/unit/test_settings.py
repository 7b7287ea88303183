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
