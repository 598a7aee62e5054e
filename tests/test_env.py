import os

from instructune.env import resolve_wandb_mode, load_dotenv_file, redact


def test_dotenv_is_loaded_without_overriding_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTUNE_TEST_KEPT", "from-env")
    monkeypatch.delenv("INSTRUCTUNE_TEST_NEW", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("INSTRUCTUNE_TEST_NEW=from-file\nINSTRUCTUNE_TEST_KEPT=from-file\n")
    assert load_dotenv_file(env_file) is True
    assert os.environ["INSTRUCTUNE_TEST_NEW"] == "from-file" and os.environ["INSTRUCTUNE_TEST_KEPT"] == "from-env"
    monkeypatch.delenv("INSTRUCTUNE_TEST_NEW")
    assert load_dotenv_file(tmp_path / "absent.env") is False


def test_wandb_goes_offline_without_a_key_and_secrets_are_redacted(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode() == "disabled"
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    assert redact("token=hf_secret_value_123 ok") == "token=*** ok"


def test_package_versions_are_the_installed_ones():
    import platform
    from importlib.metadata import version

    import torch

    from instructune.versions import TRACKED_PACKAGES, package_versions

    versions = package_versions()
    assert set(versions) == {"python", *TRACKED_PACKAGES, "cuda", "cudnn", "gpu"}
    assert versions["python"] == platform.python_version() and versions["torch"] == torch.__version__
    assert versions["peft"] == version("peft") and versions["transformers"] == version("transformers")
    assert versions["cuda"] == torch.version.cuda
