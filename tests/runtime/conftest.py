import pytest


@pytest.fixture(scope="session")
def image_onnx(tmp_path_factory, image_checkpoint):
    """The randomised iaunet_r18 of tests/conftest.py, exported in plugin mode."""
    from iaunet.export.exporter import export_checkpoint
    return export_checkpoint(image_checkpoint, tmp_path_factory.mktemp("onnx") / "m.onnx", "plugin").path
