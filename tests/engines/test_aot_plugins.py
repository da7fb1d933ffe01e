"""engines.aot_plugins' own decisions, without TensorRT (its run through NVIDIA's
tensorrt.plugin is in test_trtp_contract.py)."""
import numpy as np
import pytest

from iaunet.core.errors import IAUnetError
from iaunet.core.plugin_contract import PART_OP, Kernel
from iaunet.engines.aot_plugins import attribute_int, check_shared_memory


def _kernel(shared_bytes: int) -> Kernel:
    return Kernel(PART_OP, "fp32", "part_k", b"", {"BLOCK_N": 16}, ("S", "N", "PARTS", "W"), (128, 1, 1),
                  shared_bytes)


def test_kernels_over_48_kib_of_shared_memory_are_refused_on_the_aot_route():
    check_shared_memory(_kernel(48 * 1024))
    with pytest.raises(IAUnetError, match="65536 bytes of shared memory.*--plugins python"):
        check_shared_memory(_kernel(64 * 1024))


def test_attributes_arrive_as_one_element_arrays():
    assert attribute_int(np.array([4], np.int32)) == 4 and attribute_int(np.int64(3)) == 3
    with pytest.raises(IAUnetError, match="one integer"):
        attribute_int(np.array([1, 2], np.int32))
