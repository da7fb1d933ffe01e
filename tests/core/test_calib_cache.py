"""The .calib header: written for one TensorRT version by the calib stage, re-stamped for
the TensorRT the build runs on (TensorRT skips a cache whose header names another version
and, with no calibration data, the legacy INT8 build then fails)."""
import pytest

from iaunet.core.calib_cache import for_version, header
from iaunet.core.errors import IAUnetError

CACHE = "TRT-100300-EntropyCalibration2\nimages: 3c010204\nconv1: 3d4ccccd\n"


@pytest.mark.parametrize("version, code", [("10.3.0", 100300), ("10.13.3.9", 101303), ("10.16.0", 101600)])
def test_the_build_restamps_the_cache_for_its_tensorrt(version, code):
    stamped = for_version(CACHE, version)
    assert stamped.splitlines()[0] == f"TRT-{code}-EntropyCalibration2" == header(version)
    assert stamped.splitlines()[1:] == CACHE.splitlines()[1:]  # the scales are untouched


def test_the_legacy_build_hands_tensorrt_a_cache_for_its_own_version(tmp_path):
    """builder.calibration_cache: what Polygraphy's calibrator reads on a 10.16 device from
    a .calib the calib stage wrote with its default header (10.3.0)."""
    from iaunet.engines.builder import calibration_cache
    from iaunet.engines.plan import BuildOptions, plan_build
    from iaunet.runtime.engine_card import Machine
    from tests.engines.test_plan import CARD
    (tmp_path / "m.calib").write_text(CACHE)
    plan = plan_build(CARD, "cd" * 32, False, Machine("Thor", 110, "10.16.0.72"),
                      BuildOptions(legacy_int8=True, calib=str(tmp_path / "m.calib")))
    assert calibration_cache(plan).read().decode().splitlines()[0] == "TRT-101600-EntropyCalibration2"


def test_a_file_that_is_no_calibration_cache_is_refused():
    with pytest.raises(IAUnetError, match="calibration header"):
        for_version("images: 3c010204\n", "10.3.0")
