import pytest
import torch

from train import create_model, save_checkpoint


def _randomised(name, **kw):
    """A model whose IAU blocks matter: every BN gets random affine and running stats
    (the zero-initialised update BNs of a fresh model make the blocks an identity)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, height=64, width=32, **kw)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="session")
def image_checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "image.pt", _randomised("iaunet_r18"))


@pytest.fixture(scope="session")
def video_checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "video.pt", _randomised("iaunet_video_r18", frames=3))


@pytest.fixture(scope="session")
def exported(image_checkpoint, tmp_path_factory):
    """Plugin and native exports of the image checkpoint: {mode: ExportReport}."""
    from export.exporter import export_checkpoint
    out = tmp_path_factory.mktemp("onnx")
    return {mode: export_checkpoint(image_checkpoint, out / f"{mode}.onnx", mode) for mode in ("plugin", "native")}
