"""Each reader on a tiny fixture folder in its layout, and broken layouts."""
import numpy as np
import pytest
from PIL import Image

from iaunet.core.errors import IAUnetError
from iaunet.core.preprocess import load_image
from iaunet.train.data.datasets import open_dataset, read_dukemtmc, read_mars


def _jpg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 64), (120, 30, 200)).save(path)


def _market(root, names):
    for sub, files in names.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for f in files:
            _jpg(root / sub / f)
    return root


def test_market_reader_drops_junk_keeps_distractors_relabels(tmp_path):
    root = _market(tmp_path / "Market", {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s3_077419_03.jpg"],
        "query": ["0001_c1s1_001051_00.jpg"],
        "bounding_box_test": ["0001_c2s1_000301_01.jpg", "0000_c1s1_000001_00.jpg", "-1_c1s1_000401_03.jpg"],
    })
    data = open_dataset(root)
    assert data.name == "market1501" and not data.video
    assert sorted(s.pid for s in data.train) == [0, 0, 1] and data.num_train_pids == 2
    assert [s.camid for s in data.train] == [0, 1, 2]
    assert sorted(s.pid for s in data.gallery) == [0, 1]  # distractor 0 stays, junk -1 goes
    assert data.query[0].camid == 0


def test_duke_reader(tmp_path):
    root = _market(tmp_path / "DukeMTMC-reID", {
        "bounding_box_train": ["0005_c2_f0046985.jpg"], "query": ["0033_c1_f0057706.jpg"],
        "bounding_box_test": ["0033_c6_f0045755.jpg"]})
    data = read_dukemtmc(root)
    assert data.name == "dukemtmc" and data.gallery[0].camid == 5


def test_msmt17_reader(tmp_path):
    root = tmp_path / "MSMT17_V1"
    lists = {"list_train.txt": ("train", "0000/0000_000_01_0303morning_0015_0.jpg 0"),
             "list_val.txt": ("train", "0001/0001_001_05_0303morning_0030_1.jpg 1"),
             "list_query.txt": ("test", "0000/0000_000_14_0303morning_0945_0.jpg 0"),
             "list_gallery.txt": ("test", "0000/0000_003_02_0303afternoon_1560_1.jpg 0")}
    for name, (sub, line) in lists.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(line + "\n")
        _jpg(root / sub / line.split()[0])
    data = open_dataset(root)
    assert data.name == "msmt17"
    assert [s.camid for s in data.train] == [0, 4]
    assert data.query[0].camid == 13 and data.gallery[0].camid == 1


def test_mars_reader(tmp_path):
    from scipy.io import savemat
    root = tmp_path / "MARS"
    train = ["0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0003C2T0002F001.jpg"]
    test = ["0002C1T0001F001.jpg", "0002C1T0001F002.jpg", "0002C3T0002F001.jpg", "0000C1T0003F001.jpg"]
    for split, names in (("train", train), ("test", test)):
        for n in names:
            _jpg(root / f"bbox_{split}" / n[:4] / n)
        (root / "info").mkdir(exist_ok=True)
        (root / "info" / f"{split}_name.txt").write_text("\n".join(names))
    savemat(root / "info/tracks_train_info.mat", {"track_train_info": np.array([[1, 2, 1, 1], [3, 3, 3, 2]])})
    savemat(root / "info/tracks_test_info.mat",
            {"track_test_info": np.array([[1, 2, 2, 1], [3, 3, 2, 3], [4, 4, 0, 1]])})
    savemat(root / "info/query_IDX.mat", {"query_IDX": np.array([[1]])})
    data = read_mars(root)
    assert data.video and data.num_train_pids == 2
    assert [len(s.paths) for s in data.train] == [2, 1]
    assert len(data.query) == 1 and data.query[0].pid == 2 and data.query[0].camid == 0
    assert sorted(s.pid for s in data.gallery) == [0, 2]


@pytest.mark.parametrize("missing", ["query", "bounding_box_test"])
def test_missing_folder_names_the_expected_layout(tmp_path, missing):
    root = _market(tmp_path / "m", {"bounding_box_train": ["0001_c1s1_000001_00.jpg"], "query": [],
                                    "bounding_box_test": []})
    (root / missing).rmdir()
    with pytest.raises(IAUnetError, match=f"missing {missing}; expected .*bounding_box_train/"):
        open_dataset(root)


def test_unknown_layout_and_missing_folder(tmp_path):
    with pytest.raises(IAUnetError, match="no known re-ID layout"):
        open_dataset(tmp_path)
    with pytest.raises(IAUnetError, match="not found"):
        open_dataset(tmp_path / "nope")


def test_badly_named_image_and_broken_mars_info(tmp_path):
    root = _market(tmp_path / "m", {"bounding_box_train": ["person.jpg"], "query": [], "bounding_box_test": []})
    with pytest.raises(IAUnetError, match="person.jpg does not follow"):
        open_dataset(root)
    mars = tmp_path / "MARS"
    for p in ("bbox_train", "bbox_test", "info"):
        (mars / p).mkdir(parents=True)
    for f in ("train_name.txt", "test_name.txt", "tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat"):
        (mars / "info" / f).write_text("garbage")
    with pytest.raises(IAUnetError, match="tracks_train_info.mat is not a MARS info file"):
        open_dataset(mars)


def test_corrupt_image_is_reported_by_path(tmp_path):
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(IAUnetError, match=r"corrupt image .*0001_c1s1_000001_00\.jpg"):
        load_image(bad)
