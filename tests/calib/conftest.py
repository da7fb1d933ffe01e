import pytest


@pytest.fixture(scope="session")
def trained_setup(tmp_path_factory, market_synth):
    """A briefly trained checkpoint on the synthetic set, with its plugin and native exports
    beside it: {checkpoint, plugin, native, data}."""
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train.trainer import TrainOptions, main
    out = tmp_path_factory.mktemp("calib_run")
    checkpoint = main(TrainOptions(data=str(market_synth), output=str(out), model="iaunet_r18", epochs=2, height=64,
                                   width=32, batch_size=8, num_instances=2, lr=1e-3, warmup_epochs=1,
                                   progress=False))
    plugin = export_checkpoint(checkpoint, out / "model.onnx", "plugin").path
    native = export_checkpoint(checkpoint, out / "model.native.onnx", "native").path
    return {"checkpoint": checkpoint, "plugin": plugin, "native": native, "data": market_synth, "dir": out}
