import pytest
import torch

from iaunet.core.errors import IAUnetError
from iaunet.train import create_model, list_models, register_model


def test_reference_parameter_count():
    # blue-blue272/ImgReID-IAnet's IAUnet(num_classes=751) has 29,003,085 parameters
    model = create_model("iaunet_r50", num_classes=751)
    assert sum(p.numel() for p in model.parameters()) == 29_003_085


def test_image_model_shapes_eval_and_train():
    model = create_model("iaunet_r18", num_classes=7, height=64, width=32)
    x = torch.randn(3, 3, 64, 32)
    model.eval()
    assert model(x).shape == (3, 512)
    model.train()
    logits, feature, maps = model(x)
    assert logits.shape == (3, 7) and feature.shape == (3, 512)
    assert [m.shape for m in maps] == [(3, 4, 8, 4), (3, 4, 4, 2)]
    assert all(((m >= 0) & (m <= 1)).all() for m in maps)


def test_video_model_shapes_and_frame_count_flexibility():
    model = create_model("iaunet_video_r18", num_classes=5, height=64, width=32, frames=3).eval()
    assert model(torch.randn(2, 3, 3, 64, 32)).shape == (2, 512)
    assert model(torch.randn(2, 2, 3, 64, 32)).shape == (2, 512)  # shorter clip than configured
    model.train()
    _, _, maps = model(torch.randn(2, 3, 3, 64, 32))
    assert maps[0].shape == (6, 4, 8, 4)


def test_forward_features_is_the_head_input():
    model = create_model("iaunet_r18", num_classes=4, height=64, width=32).eval()
    x = torch.randn(2, 3, 64, 32)
    pooled, maps = model.forward_features(x)
    assert torch.allclose(model.bnneck(pooled), model(x))


def test_registry_rejects_duplicates_and_unknown_names():
    assert {"iaunet_r50", "iaunet_r18", "iaunet_video_r50"} <= set(list_models())
    with pytest.raises(ValueError, match="already registered"):
        @register_model
        def iaunet_r50():  # noqa: F811
            pass
    with pytest.raises(IAUnetError, match="unknown model"):
        create_model("iaunet_r999")
    with pytest.raises(IAUnetError, match="unknown model options"):
        create_model("iaunet_r18", num_clases=3)


def test_pretrained_loads_torchvision_layout_and_rejects_mismatch(tmp_path):
    donor = create_model("iaunet_r18", num_classes=3)
    state = dict(donor.backbone.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # torchvision's head
    good = tmp_path / "resnet18.pth"
    torch.save(state, good)
    model = create_model("iaunet_r18", num_classes=3, pretrained=str(good))
    assert torch.equal(model.backbone.conv1.weight, donor.backbone.conv1.weight)

    with pytest.raises(IAUnetError, match=r"resnet18\.pth do not match the backbone.*first: "):
        create_model("iaunet_r50", num_classes=3, pretrained=str(good))
    with pytest.raises(IAUnetError, match="not found"):
        create_model("iaunet_r18", pretrained=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(IAUnetError, match="could not be read"):
        create_model("iaunet_r18", pretrained=str(tmp_path / "junk.pth"))
