import pytest


@pytest.fixture(scope="session")
def exported(image_checkpoint, tmp_path_factory):
    """Plugin and native exports of the image checkpoint: {mode: ExportReport}."""
    from iaunet.export.exporter import export_checkpoint
    out = tmp_path_factory.mktemp("onnx")
    return {mode: export_checkpoint(image_checkpoint, out / f"{mode}.onnx", mode) for mode in ("plugin", "native")}
