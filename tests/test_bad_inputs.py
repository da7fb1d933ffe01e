"""Bad input to every command, in-process: what a careless or hostile user types.

Each case runs ``iaunet.cli.main(argv)`` and checks that the command
1. exits non-zero (1: a user error),
2. prints exactly one non-empty stderr line, ``iaunet <command>: error: ...`` naming the
   problem (no traceback, no log line before it),
3. leaves every input byte-identical (the fixture tree is hashed before and after), and
4. creates nothing in the output location (the case's working folder, the fixture tree
   and the output's parent folder are listed before and after).

Fixtures are built once per module and are read-only for the cases: a case that needs
something beside them (a symlink, a foreign file) makes it in its own working folder.
Case ids are ``<command>-<kind>`` (``plugins compile`` -> ``plugins-compile``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

PROC_OUT = "/proc/iaunet-bad-output"  # root can stat /proc but create nothing there


@dataclass(frozen=True)
class Case:
    command: str            # as typed: "train", "plugins compile"
    kind: str               # the bad input, e.g. "output-is-input"
    argv: tuple             # after the command; "{name}" is a fixture path (see ``fx``)
    expect: str             # a fragment the one error line contains
    setup: Callable | None = None   # setup(cwd: Path, fx: dict) before the "before" snapshot
    cwd: str = "tmp"        # "tmp": a fresh folder per case; "fx": the fixture root (for ./x spellings)
    code: int = 1
    machine: tuple | None = None  # (GPU name, compute capability, TensorRT version) the GPU machine reports

    @property
    def id(self) -> str:
        return f"{self.command.replace(' ', '-')}-{self.kind}"


def C(command, kind, argv, expect, **kw) -> Case:
    return Case(command, kind, tuple(argv.split()) if isinstance(argv, str) else tuple(argv), expect, **kw)


# --- setups: things a case makes in its own working folder -------------------------------

def _symlink(name, target):
    def setup(cwd, fx):
        (cwd / name).symlink_to(fx[target])
    return setup


def _file(name, text="not an engine"):
    def setup(cwd, fx):
        (cwd / name).write_text(text)
    return setup


def _engine_of(name, onnx):
    """An engine file with the sidecar ``iaunet build`` would write for fixture ``onnx``."""
    def setup(cwd, fx):
        from iaunet.engines.plan import BuildOptions, plan_build
        from iaunet.runtime.embedder import read_card
        from iaunet.runtime.engine_card import Machine, sidecar_path
        (cwd / name).write_bytes(b"\0" * 64)
        plan = plan_build(read_card(fx[onnx]), "cd" * 32, True, Machine("Orin", 87, "10.3.0"),
                          BuildOptions(ptx_dir=str(fx["ptx"])))
        sidecar_path(cwd / name).write_text(json.dumps(plan.sidecar()))
    return setup


def _fifo(name):
    def setup(cwd, fx):
        os.mkfifo(cwd / name)
    return setup


CALIB_RECORD = {"precision": "int8", "source": "model.onnx", "source_sha256": "0" * 64, "method": "entropy"}
TRIAGE_RECORD = {"reference": "a.onnx", "candidate": "b.onnx", "backend": "onnxruntime", "paired": 3, "layers": []}


def _record(name, payload):
    """Another stage's JSON record, as that stage writes it (the keys that identify it)."""
    return _file(name, json.dumps(payload, indent=2))


def _copy_of(name, fixture):
    def setup(cwd, fx):
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fx[fixture], cwd / name)
    return setup


def _foreign_demo_folder(cwd, fx):
    """A previous demo's folder (demo.json lists a.txt) with a file the demo did not write."""
    (cwd / "prev").mkdir()
    (cwd / "prev" / "a.txt").write_text("demo output")
    (cwd / "prev" / "mine.txt").write_text("the user's notes")
    (cwd / "prev" / "demo.json").write_text(json.dumps({"files": ["a.txt", "demo.json"]}))


def _run_folder(cwd, fx):
    """A finished run: training again into it would replace its model.pt."""
    (cwd / "run").mkdir()
    for name in ("model.pt", "last.pt", "history.json"):
        (cwd / "run" / name).write_text(f"previous {name}")


# --- the cases ---------------------------------------------------------------------------

TRAIN = "--data {data} -o run --model iaunet_r18 --height 64 --width 32 --batch-size 8 --num-instances 2 " \
        "--epochs 1 --warmup-epochs 0 --milestones 5"
EVAL = "{ckpt} --data {data}"
EXPORT = "{ckpt} -o out.onnx"
FP16 = "{onnx} --precision fp16 -o out.onnx"
INT8 = "{onnx} --precision int8 --data {data} -o out.onnx --cache-dir cache"
PARITY = "{ckpt} {onnx} --data {data} -o report"
COMPILE = "--arch 87 -o ptx --cache-dir ptx-cache"
EMBED = "{data}/query -m {onnx} -o g.npz"
SEARCH = "{data}/query -m {onnx} --gallery {other_gallery}"
BUILD = "{onnx} -o m.engine --ptx {ptx}"  # a plugin graph needs its PTX folder
BUNDLE = "{fx}/model --target orin -o bundle"
# a checkpoint argument that is not a usable checkpoint (eval and export read it alike)
BAD_CHECKPOINTS = [
    ("checkpoint-missing", "nowhere.pt", "nowhere.pt not found"),
    ("checkpoint-is-folder", "{empty}", "is a folder"),
    ("checkpoint-is-text", "{text}", "not a readable checkpoint"),
    ("checkpoint-truncated", "{truncated_ckpt}", "not a readable checkpoint"),
    ("checkpoint-corrupt-weights", "{tampered_ckpt}", "is corrupted"),
    ("checkpoint-is-onnx", "{onnx}", "not a readable checkpoint"),
]


SYNONYMS = {"-o": "--output", "-m": "--model"}


def _merged(base: list, extra: list) -> list:
    """``base`` without the options ``extra`` gives again (each with its value), then ``extra``."""
    given = {SYNONYMS.get(t, t) for t in extra if t.startswith("-")}
    kept, skip = [], False
    for i, token in enumerate(base):
        if skip:
            skip = False
            continue
        if token.startswith("-") and SYNONYMS.get(token, token) in given:
            skip = i + 1 < len(base) and not base[i + 1].startswith("-")
            continue
        kept.append(token)
    return kept + extra


def cases() -> list[Case]:
    """The table: per command, a base command line that would work (or get far) and the
    bad input added to it (an option in the bad input replaces the base's: the command
    refuses a single-value option given twice)."""
    out = []

    def add(command, base, rows):
        for kind, extra, expect, *options in rows:
            out.append(C(command, kind, _merged(base.split(), extra.split()), expect,
                         **(options[0] if options else {})))

    add("synth", "-o data-out", [
        ("identities-zero", "--identities 0", "--identities: expected an integer in [4, 100000], got 0"),
        ("identities-negative", "--identities -5", "--identities: expected"),
        ("identities-huge", f"--identities {10 ** 12}", f"got {10 ** 12}"),
        ("identities-nan", "--identities nan", "got 'nan'"),
        ("identities-float", "--identities 4.5", "got '4.5'"),
        ("cameras-one", "--cameras 1", "--cameras: expected an integer in [2, 64]"),
        ("cameras-huge", "--cameras 100000", "--cameras"),
        ("seed-negative", "--seed -1", "--seed: expected an integer in [0, 4294967295]"),
        ("seed-huge", f"--seed {2 ** 32}", "--seed"),
        ("seed-non-numeric", "--seed abc", "got 'abc'"),
        ("output-not-empty", "-o {data}", "is not empty"),
        ("output-is-file", "-o {text}", "is a file"),
        ("output-parent-is-file", "-o {text}/sub", "is a file, not a folder"),
        ("output-parent-missing", "-o nowhere/sub/data", "does not exist"),
        ("output-under-proc", f"-o {PROC_OUT}", "not writable"),
        ("unknown-option", "--layout duke", "unrecognized arguments: --layout duke"),
    ])
    add("synth", "", [("output-missing", "--identities 8", "the following arguments are required: -o/--output")])

    add("train", TRAIN, [
        ("data-missing", "--data nowhere", "data folder nowhere not found"),
        ("data-is-file", "--data {text}", "is a file; expected a data set folder"),
        ("data-empty-folder", "--data {empty}", "has no known re-ID layout"),
        ("data-no-bounding-box-train", "--data {no_train}", "has no known re-ID layout"),
        ("data-missing-query", "--data {only_train}", "missing query, bounding_box_test"),
        ("data-empty-splits", "--data {empty_splits}", "holds no images"),
        ("data-video-for-image-model", "--data {mars}", "is an image model but"),
        ("video-model-on-image-data", "--model iaunet_video_r18", "is a video model but"),
        ("frames-huge", f"--model iaunet_video_r18 --data {{mars}} --frames {10 ** 9}", "1000000000 frames"),
        ("model-unknown", "--model resnet9000", "unknown model 'resnet9000'"),
        ("too-few-identities", "--batch-size 64", "needs 32 identities"),
        ("epochs-zero", "--epochs 0", "--epochs: expected an integer >= 1, got 0"),
        ("epochs-negative", "--epochs -3", "--epochs"),
        ("epochs-nan", "--epochs nan", "--epochs"),
        ("epochs-float", "--epochs 1.5", "--epochs"),
        ("batch-size-zero", "--batch-size 0", "--batch-size"),
        ("batch-size-not-divisible", "--batch-size 7", "is not divisible by --num-instances"),
        ("batch-size-huge", f"--batch-size {2 * 10 ** 9}", "memory"),
        ("num-instances-one", "--num-instances 1", "--num-instances: expected an integer >= 2"),
        ("num-instances-negative", "--num-instances -2", "--num-instances"),
        ("lr-zero", "--lr 0", "--lr: expected a number > 0, got 0"),
        ("lr-negative", "--lr -0.1", "--lr"),
        ("lr-nan", "--lr nan", "--lr"),
        ("lr-inf", "--lr inf", "--lr"),
        ("lr-non-numeric", "--lr fast", "got 'fast'"),
        ("height-zero", "--height 0", "--height"),
        ("height-not-multiple-of-16", "--height 100", "not a multiple of 16"),
        ("width-negative", "--width -32", "--width"),
        ("size-huge", "--height 100000 --width 100000", "memory"),
        ("frames-zero", "--frames 0", "--frames"),
        ("weight-decay-negative", "--weight-decay -1", "--weight-decay"),
        ("warmup-epochs-negative", "--warmup-epochs -1", "--warmup-epochs"),
        ("milestones-zero", "--milestones 0", "--milestones"),
        ("gamma-above-one", "--gamma 2", "--gamma: expected a number in [0, 1]"),
        ("margin-nan", "--margin nan", "--margin"),
        ("mask-weight-inf", "--mask-weight inf", "--mask-weight"),
        ("label-smooth-one", "--label-smooth 1", "--label-smooth"),
        ("seed-huge", f"--seed {2 ** 40}", "--seed"),
        ("workers-negative", "--workers -1", "--workers"),
        ("workers-huge", f"--workers {10 ** 6}", "--workers"),
        ("eval-every-negative", "--eval-every -1", "--eval-every"),
        ("output-is-file", "-o {text}", "is a file"),
        ("output-is-data", "-o {data}", "is not empty"),
        ("output-existing-run", "-o run", "is not empty", {"setup": _run_folder}),
        ("output-parent-is-file", "-o {text}/run", "is a file, not a folder"),
        ("output-parent-missing", "-o nowhere/run", "does not exist"),
        ("output-under-proc", f"-o {PROC_OUT}", "not writable"),
        ("pretrained-missing", "--pretrained nowhere.pth", "pretrained weights nowhere.pth not found"),
        ("pretrained-text-file", "--pretrained {text}", "could not be read"),
        ("resume-missing", "--resume nowhere/last.pt", "not found"),
        ("resume-truncated", "--resume {truncated_ckpt}", "not a readable checkpoint"),
        ("resume-without-optimizer", "--resume {ckpt}", "has no optimizer state"),
        ("resume-corrupt-weights", "--resume {tampered_ckpt}", "is corrupted"),
    ])
    add("train", "", [("data-option-missing", "-o run", "the following arguments are required: --data")])

    add("eval", "--data {data}", BAD_CHECKPOINTS + [
        ("video-checkpoint-on-image-data", "{video_ckpt}", "is a video model but"),
    ])
    add("eval", EVAL, [
        ("data-missing", "--data nowhere", "not found"),
        ("data-empty-folder", "--data {empty}", "has no known re-ID layout"),
        ("corrupt-image", "--data {corrupt}", "corrupt image"),
        ("metric-unknown", "--metric manhattan", "invalid choice: 'manhattan'"),
        ("workers-negative", "--workers -1", "--workers"),
        ("json-is-checkpoint", "--json {ckpt}", "is the input"),
        ("json-is-folder", "--json {empty}", "is a folder"),
        ("json-parent-is-file", "--json {text}/m.json", "is a file, not a folder"),
        ("json-parent-missing", "--json nowhere/m.json", "does not exist"),
        ("json-under-proc", f"--json {PROC_OUT}", "not writable"),
    ])

    add("export", "-o out.onnx", BAD_CHECKPOINTS + [
        ("frames-huge", f"{{video_ckpt}} --frames {10 ** 9}", "memory"),
    ])
    add("export", EXPORT, [
        ("output-is-input", "-o {ckpt}", "is the input"),
        ("output-is-input-other-spelling", "-o {fx}/data/../model/image.pt", "is the input"),
        ("output-is-input-via-symlink", "-o link.pt", "is the input", {"setup": _symlink("link.pt", "ckpt")}),
        ("output-is-input-dot-spelling", "-o ./model/image.pt", "is the input", {"cwd": "fx"}),
        ("output-is-folder", "-o {empty}", "is a folder"),
        ("output-is-data", "-o {data} --data {data}", "is a folder"),
        ("output-parent-is-file", "-o {text}/m.onnx", "is a file, not a folder"),
        ("output-parent-missing", "-o nowhere/m.onnx", "does not exist"),
        ("output-under-proc", f"-o {PROC_OUT}", "not writable"),
        ("mode-unknown", "--mode tensorrt", "invalid choice: 'tensorrt'"),
        ("opset-low", "--opset 12", "--opset: expected an integer in [13, 20], got 12"),
        ("opset-high", "--opset 21", "got 21"),
        ("opset-nan", "--opset nan", "--opset"),
        ("frames-zero", "--frames 0", "--frames"),
        ("frames-on-image-model", "--frames 4", "--frames applies to video models"),
        ("data-missing", "--data nowhere", "not found"),
        ("data-empty-folder", "--data {empty}", "has no known re-ID layout"),
        ("data-video-for-image-model", "--data {mars}", "is an image model but"),
        ("corrupt-image", "--data {corrupt}", "corrupt image"),
    ])
    add("export", "{video_ckpt} -o out.onnx", [
        ("video-checkpoint-on-image-data", "--data {data}", "is a video model but"),
    ])
    add("export", "{ckpt}", [("output-missing", "", "the following arguments are required: -o/--output")])

    add("calib", "--precision fp16 -o out.onnx", [
        ("model-missing", "nowhere.onnx", "ONNX file nowhere.onnx not found"),
        ("model-is-folder", "{empty}", "is a folder"),
        ("model-is-text", "{text}", "is not a readable ONNX file"),
        ("model-truncated", "{truncated_onnx}", "not a readable ONNX file"),
        ("model-is-checkpoint", "{ckpt}", "not a readable ONNX file"),
        ("model-already-fp16", "{fp16_onnx}", "is already a fp16 variant"),
    ])
    add("calib", "{onnx} -o out.onnx", [
        ("precision-missing", "", "the following arguments are required: --precision"),
        ("precision-unknown", "--precision fp8", "invalid choice: 'fp8'"),
    ])
    add("calib", FP16, [
        ("samples-zero", "--samples 0", "--samples: expected an integer >= 1, got 0"),
        ("samples-negative", "--samples -4", "--samples"),
        ("samples-nan", "--samples nan", "--samples"),
        ("percentile-zero", "--percentile 0", "--percentile: expected a number in (0, 100], got 0"),
        ("percentile-above-100", "--percentile 100.5", "--percentile"),
        ("percentile-nan", "--percentile nan", "--percentile"),
        ("percentile-inf", "--percentile inf", "--percentile"),
        ("seed-negative", "--seed -1", "--seed"),
        ("output-is-input", "-o {onnx}", "is the input"),
        ("output-is-input-other-spelling", "-o {fx}/data/../model/model.onnx", "is the input"),
        ("output-is-input-via-symlink", "-o link.onnx", "is the input", {"setup": _symlink("link.onnx", "onnx")}),
        ("output-is-input-dot-spelling", "-o ./model/model.onnx", "is the input", {"cwd": "fx"}),
        ("output-is-its-record", "-o out.json", "is where its .json record goes"),
        ("output-is-folder", "-o {empty}", "is a folder"),
        ("output-parent-is-file", "-o {text}/m.onnx", "is a file, not a folder"),
        ("output-parent-missing", "-o nowhere/m.onnx", "does not exist"),
        ("output-under-proc", f"-o {PROC_OUT}", "not writable"),
        ("data-missing", "--data nowhere", "image folder nowhere not found"),
        ("data-is-eval-split", "--data {data}/query", "is an evaluation split"),
        ("data-empty-folder", "--data {empty}", "holds no images"),
        ("data-video-for-image-model", "--data {mars}", "is an image model but"),
        ("corrupt-image", "--data {corrupt} --samples 100", "corrupt image"),
    ])
    add("calib", INT8, [
        ("int8-method-unknown", "--method magic", "invalid choice: 'magic'"),
        ("int8-output-is-input", "-o {onnx}", "is the input"),
        ("int8-output-is-its-calib", "-o out.calib", "is where its .calib cache goes"),
        ("int8-cache-dir-is-file", "--cache-dir {text}", "cache folder"),
        ("int8-trt-version-bogus", "--trt-version ten", "is not MAJOR.MINOR"),
        ("int8-data-empty-folder", "--data {empty}", "holds no images"),
        ("int8-target-one", "--target-cosine 1", "--target-cosine: expected a number in (0, 1), got 1"),
        ("int8-target-zero", "--target-cosine 0", "--target-cosine"),
        ("int8-target-nan", "--target-cosine nan", "--target-cosine"),
        ("int8-target-percent", "--target-cosine 99", "--target-cosine"),
        ("int8-max-fp16-layers-zero", "--target-cosine 0.99 --max-fp16-layers 0", "--max-fp16-layers"),
        ("int8-max-fp16-layers-without-target", "--max-fp16-layers 3", "pass --target-cosine too"),
        ("int8-output-is-its-plot", "--target-cosine 0.99 -o out.png", "is where its sensitivity plot goes"),
        ("int8-target-too-few-held-out", "--target-cosine 0.99 --samples 100000",
         "needs at least 8 training images beside"),
    ])
    add("calib", FP16, [("fp16-with-target", "--target-cosine 0.99", "--target-cosine applies to --precision int8")])
    add("calib", "{onnx} --precision int8 -o out.onnx", [("int8-without-data", "", "INT8 needs calibration images")])

    add("parity", "--data {data} -o report", [
        ("checkpoint-missing", "nowhere.pt {onnx}", "nowhere.pt not found"),
        ("checkpoint-is-text", "{text} {onnx}", "not a readable checkpoint"),
        ("checkpoint-truncated", "{truncated_ckpt} {onnx}", "not a readable checkpoint"),
        ("onnx-of-another-checkpoint", "{other_ckpt} {onnx}", "was exported from another checkpoint"),
        ("no-variants-found", "{other_ckpt}", "no variants given"),
    ])
    add("parity", PARITY, [
        ("variant-missing", "nowhere.onnx", "ONNX file nowhere.onnx not found"),
        ("variant-is-text", "{text}", "is not a readable ONNX file"),
        ("variant-is-checkpoint", "{ckpt}", "not a readable ONNX file"),
        ("variant-truncated", "{truncated_onnx}", "not a readable ONNX file"),
        ("data-missing", "--data nowhere", "not found"),
        ("data-empty-folder", "--data {empty}", "has no known re-ID layout"),
        ("data-video-for-image-model", "--data {mars}", "is an image model but"),
        ("corrupt-image", "--data {corrupt}", "corrupt image"),
        ("output-is-file", "-o {text}", "is a file"),
        ("output-is-checkpoint", "-o {ckpt}", "is a file"),
        ("output-is-data", "-o {data}", "is the input"),
        ("output-parent-missing", "-o nowhere/report", "does not exist"),
        ("output-under-proc", f"-o {PROC_OUT}", "not writable"),
    ])
    add("parity", "{ckpt} {onnx}", [("data-option-missing", "", "expected CHECKPOINT [VARIANT ...] --data DIR")])
    add("parity", "{onnx}", [
        ("kit-missing", "--kit nowhere", "nowhere is not a parity kit"),
        ("kit-is-data", "--kit {data}", "is not a parity kit"),
        ("kit-with-data", "--kit {empty} --data {data}", "use one or the other"),
        ("kit-out-without-data", "--kit-out kit", "--kit-out takes one CHECKPOINT"),
        ("kit-size-one", "--kit-out kit --data {data} --kit-size 1", "--kit-size: expected an integer"),
    ])

    add("plugins compile", COMPILE, [
        ("arch-zero", "--arch 0", "--arch: expected an integer in [50, 200], got 0"),
        ("arch-negative", "--arch -87", "--arch"),
        ("arch-huge", "--arch 100000", "--arch"),
        ("arch-nan", "--arch nan", "--arch"),
        ("arch-unsupported", "--arch 75", "compute capability 75 is not supported"),
        ("hw-zero", "--hw 0", "--hw: expected an integer in [1, 65536]"),
        ("hw-huge", "--hw 128 1000000", "--hw"),
        ("hw-non-numeric", "--hw big", "--hw"),
        ("nodes-one", "--nodes 1", "--nodes: expected an integer in [2, 1024]"),
        ("nodes-huge", "--nodes 5000", "--nodes"),
        ("ptx-version-bogus", "--ptx-version eight", "is not a PTX ISA version"),
        ("ptx-version-too-old", "--ptx-version 7.0", "cannot target sm_87"),
        ("output-not-empty", "-o {data}", "is not empty"),
        ("output-is-file", "-o {text}", "is a file"),
        ("output-parent-is-file", "-o {text}/ptx", "is a file, not a folder"),
        ("output-parent-missing", "-o nowhere/ptx", "does not exist"),
        ("output-under-proc", f"-o {PROC_OUT}", "not writable"),
        ("cache-dir-is-file", "--cache-dir {text}", "cache folder"),
    ])
    add("plugins compile", "", [("arch-missing", "-o ptx", "the following arguments are required: --arch")])

    add("plugins bench", "", [
        ("repeats-zero", "--repeats 0", "--repeats: expected an integer >= 1, got 0"),
        ("repeats-negative", "--repeats -5", "--repeats"),
        ("repeats-nan", "--repeats nan", "--repeats"),
        ("peak-tflops-zero", "--peak-tflops 0", "--peak-tflops: expected a number > 0"),
        ("peak-tflops-negative", "--peak-tflops -100", "--peak-tflops"),
        ("peak-tflops-inf", "--peak-tflops inf", "--peak-tflops"),
        ("peak-tflops-nan", "--peak-tflops nan", "--peak-tflops"),
        ("output-is-file", "-o {text}", "is a file"),
        ("output-parent-missing", "-o nowhere/bench", "does not exist"),
        ("output-under-proc", f"-o {PROC_OUT}", "not writable"),
        ("unknown-option", "--batch 4", "unrecognized arguments: --batch 4"),
    ])
    add("plugins", "", [("action-unknown", "build", "invalid choice: 'build'")])

    add("demo", "-o demo-out", [
        ("epochs-zero", "--epochs 0", "--epochs: expected an integer in [1, 500], got 0"),
        ("epochs-negative", "--epochs -1", "--epochs"),
        ("epochs-huge", "--epochs 100000", "--epochs"),
        ("epochs-nan", "--epochs nan", "--epochs"),
        ("identities-low", "--identities 15", "--identities: expected an integer in [16, 2000]"),
        ("identities-huge", f"--identities {10 ** 12}", "--identities"),
        ("identities-non-numeric", "--identities many", "--identities"),
        ("seed-negative", "--seed -7", "--seed"),
        ("output-holds-foreign-files", "-o {data}", "is not a previous demo folder"),
        ("output-demo-folder-with-foreign-file", "-o prev", "holds mine.txt, which the previous demo did not write",
         {"setup": _foreign_demo_folder}),
        ("output-is-working-folder", "-o .", "is not a previous demo folder", {"cwd": "fx"}),
        ("output-is-file", "-o {text}", "is a file"),
        ("output-parent-is-file", "-o {text}/demo", "is a file, not a folder"),
        ("output-parent-missing", "-o nowhere/demo", "does not exist"),
        ("output-under-proc", f"-o {PROC_OUT}", "not writable"),
    ])

    add("doctor", "", [
        ("json-is-folder", "--json {empty}", "is a folder"),
        ("json-parent-is-file", "--json {text}/d.json", "is a file, not a folder"),
        ("json-parent-missing", "--json nowhere/d.json", "does not exist"),
        ("json-under-proc", f"--json {PROC_OUT}", "not writable"),
        ("json-without-value", "--json", "expected one argument"),
        ("unknown-option", "--gpu 0", "unrecognized arguments: --gpu 0"),
    ])
    add("embed", EMBED, [
        ("folder-without-images", "{empty}", "holds no images"),
        ("input-missing", "nowhere", "nowhere not found"),
        ("corrupt-image", "{corrupt}/query", "corrupt image"),
        ("model-is-text", "-m {text}", "is not an ONNX file"),
        ("model-missing", "-m nowhere.onnx", "nowhere.onnx not found"),
        ("output-is-model", "-o {onnx}", "is the input"),
        ("output-parent-missing", "-o nowhere/g.npz", "does not exist"),
        ("batch-zero", "--batch 0", "--batch: expected an integer in [1, 4096], got 0"),
        ("threads-negative", "--threads -2", "--threads"),
        ("backend-unknown", "--backend openvino", "invalid choice: 'openvino'"),
    ])
    orin_engine = {"setup": _engine_of("m.engine", "onnx")}
    add("embed", "{data}/query -m m.engine -o g.npz", [
        ("engine-for-another-gpu", "", "built for sm_87 (Orin) but this GPU is sm_90 (NVIDIA H100 80GB HBM3)",
         {**orin_engine, "machine": ("NVIDIA H100 80GB HBM3", 90, "10.3.0")}),
        ("engine-for-another-tensorrt", "", "built with TensorRT 10.3.0 but this machine has 10.7.0",
         {**orin_engine, "machine": ("Orin", 87, "10.7.0")}),
    ])
    add("search", SEARCH, [
        ("engine-of-another-model", "-m m.engine", "but model cdcdcdcdcdcd was expected", orin_engine),
        ("gallery-of-another-model", "", "but model cdcdcdcdcdcd was expected"),
        ("gallery-missing", "--gallery nowhere.npz", "nowhere.npz not found"),
        ("gallery-is-text", "--gallery {text}", "notes.txt"),
        ("top-k-zero", "--top-k 0", "--top-k: expected an integer in [1, 1000], got 0"),
        ("threshold-above-one", "--threshold 2", "--threshold"),
        ("grid-is-the-gallery", "--grid {other_gallery}", "is the input"),
        ("json-parent-missing", "--json nowhere/m.json", "does not exist"),
    ])
    add("bench", "{onnx} -o bench", [
        ("batch-zero", "--batch 0", "batch sizes must lie in 1..4096"),
        ("batch-text", "--batch a,b", "not a comma-separated list"),
        ("repeats-two", "--repeats 2", "--repeats: expected an integer in [3, 10000], got 2"),
        ("output-is-file", "-o {text}", "is a file"),
        ("checkpoint-missing", "--checkpoint nowhere.pt", "checkpoint nowhere.pt not found"),
        ("checkpoint-of-another-model", "--checkpoint {other_ckpt}", "was not exported from"),
        ("checkpoint-is-the-onnx", "--checkpoint {onnx}", "is not a readable checkpoint"),
    ])
    add("bench", "-o bench", [
        ("model-missing", "nowhere.onnx", "nowhere.onnx not found"),
        ("second-model-missing", "{onnx} nowhere.onnx", "nowhere.onnx not found"),
        ("engine-of-another-checkpoint", "m.engine --checkpoint {other_ckpt}", "was not exported from",
         orin_engine),
    ])
    add("build", "-o m.engine", [
        ("onnx-missing", "nowhere.onnx", "nowhere.onnx not found"),
        ("onnx-is-text", "{text}", "not an ONNX file"),
    ])
    add("build", BUILD, [
        ("output-is-input", "-o {onnx}", "is the input"),
        ("batch-zero", "--batch 0,1,2", "1 <= MIN <= OPT <= MAX"),
        ("batch-descending", "--batch 8,4,2", "1 <= MIN <= OPT <= MAX"),
        ("batch-text", "--batch a,b,c", "is not MIN,OPT,MAX integers"),
        ("workspace-zero", "--workspace 0", "--workspace: expected an integer in [16, 1048576], got 0"),
        ("opt-level-high", "--opt-level 9", "--opt-level: expected an integer in [0, 5], got 9"),
        ("legacy-int8-without-calib", "--legacy-int8 --ptx {empty}", "--legacy-int8 needs --calib"),
        ("calib-missing", "--legacy-int8 --calib nowhere.calib", "nowhere.calib not found"),
        ("native-route-for-plugin-graph", "--plugins native", "has IAU plugin nodes"),
        ("timing-cache-is-folder", "--timing-cache {empty}", "is a folder"),
        ("no-tensorrt", "--ptx {empty}", "TensorRT is not installed"),  # a plugin graph names its PTX
    ])
    add("triage", "--data {data} -o t.json", [
        ("reference-missing", "nowhere.onnx {onnx}", "nowhere.onnx not found"),
        ("candidate-is-text", "{onnx} {text}", "not a readable ONNX file"),
        ("candidate-is-reference", "{onnx} {onnx}", "is the reference itself"),
        ("reference-not-fp32", "{fp16_onnx} {onnx}", "expected the FP32 ONNX"),
        ("candidate-is-engine", "{onnx} m.engine", "is a TensorRT engine", {"setup": _file("m.engine")}),
    ])
    add("triage", "{onnx} {fp16_onnx} --data {data}", [
        ("output-is-input", "-o {onnx}", "is the input"),
        ("output-not-json", "-o t.png", "must end in .json"),
        ("data-missing", "--data nowhere -o t.json", "image folder nowhere not found"),
        ("data-empty-folder", "--data {empty} -o t.json", "holds no images"),
        ("data-is-eval-split", "--data {data}/query -o t.json", "is an evaluation split"),
        ("samples-zero", "--samples 0 -o t.json", "--samples: expected an integer"),
        ("threshold-above-one", "--threshold 1.5 -o t.json", "--threshold: expected a number in (0, 1)"),
        ("backend-unknown", "--backend cuda -o t.json", "invalid choice: 'cuda'"),
        ("tensorrt-without-tensorrt", "--backend tensorrt --ptx {ptx} -o t.json", "TensorRT is not installed"),
    ])
    add("bundle", "--target orin -o bundle", [
        ("artifacts-missing", "nowhere", "nowhere not found"),
        ("artifacts-without-models", "{empty}", "holds no ONNX file"),
    ])
    add("bundle", BUNDLE, [
        ("output-is-artifacts", "-o {fx}/model", "is not empty"),
        ("output-not-empty", "-o {data}", "is not empty"),
        ("target-unknown", "--target xavier", "invalid choice: 'xavier'"),
        ("deepstream-on-orin-without-native-graph", "--for deepstream", "needs the native graph"),
    ])
    add("cameras", "{scene}/cam1.mp4 --tracks {scene}/cam1.tracks.txt -m {onnx} -o cams", [
        ("tracks-count-mismatch", "--tracks {scene}/cam1.tracks.txt {scene}/cam2.tracks.txt",
         "1 videos but 2 track files"),
        ("bad-track-line", "--tracks {bad_tracks}", "bad.tracks.txt:3: "),
        ("tracks-missing", "--tracks nowhere.txt", "track file nowhere.txt not found"),
        ("queue-smaller-than-batch", "--queue-size 4 --batch 8", "queue_size 4 is smaller than batch 8"),
        ("every-zero", "--every 0", "--every: expected an integer >= 1, got 0"),
        ("max-overlap-above-one", "--max-overlap 1.5", "--max-overlap: expected a number in [0, 1], got 1.5"),
        ("on-full-unknown", "--on-full wait", "invalid choice: 'wait'"),
        ("output-is-video", "-o {scene}/cam1.mp4", "is a file"),
        ("model-missing", "-m nowhere.onnx", "nowhere.onnx not found"),
    ])
    add("cameras", "nowhere.mp4 --tracks {scene}/cam1.tracks.txt -m {onnx} -o cams", [
        ("video-missing", "", "video nowhere.mp4 not found"),
    ])
    add("synth", "--scenes -o scenes-out", [
        ("scenes-and-video", "--video", "--scenes and --video"),
        ("scenes-frame-size-odd", "--frame-size 161x96", "--frame-size: expected WxH with even sizes"),
        ("scenes-fps-zero", "--fps 0", "--fps: expected an integer in [1, 120], got 0"),
    ])
    add("verify", "", [
        ("bundle-missing", "nowhere", "nowhere is not a bundle"),
        ("bundle-is-data", "{data}", "is not a bundle"),
        ("repeats-zero", "{data} --repeats 0", "--repeats: expected an integer"),
    ])
    out.extend(output_cases())
    add("iaunet", "", [("command-unknown", "fly", "invalid choice: 'fly'")])
    return out


def output_cases() -> list[Case]:
    """Outputs that are not plain new files (issues 25 and 29): another kind of file, a
    special file, inside an input folder, twice on one path, a repeated option."""
    out = []

    def add(command, base, rows):
        for kind, extra, expect, *options in rows:
            out.append(C(command, kind, _merged(base.split(), extra.split()), expect,
                         **(options[0] if options else {})))

    add("doctor", "", [
        ("json-is-the-model", "--json {onnx}", "is an ONNX model; not replacing it with a machine report"),
        ("json-is-a-checkpoint", "--json {ckpt}", "is a PyTorch checkpoint; not replacing it"),
        ("json-is-a-fifo", "--json fifo", "is a FIFO (named pipe), not a regular file", {"setup": _fifo("fifo")}),
        ("json-name-too-long", "--json " + "x" * 300, "is 300 bytes long"),
        ("json-repeated", "--json a.json --json b.json", "--json given twice"),
    ])
    add("export", EXPORT, [
        ("output-is-the-only-checkpoint", "-o {other_ckpt}", "is a PyTorch checkpoint; not replacing it with an ONNX"),
        ("output-is-a-gallery", "-o {other_gallery}", "is a gallery (.npz)"),
        ("output-inside-data", "--data {data} -o {data}/m.onnx", "inside the input folder"),
        ("output-repeated", "-o a.onnx -o b.onnx", "-o/--output given twice"),
    ])
    add("calib", FP16, [
        ("output-is-the-checkpoint", "-o {ckpt}", "is a PyTorch checkpoint; not replacing it with an ONNX"),
        ("record-is-another-stages", "-o rec.onnx", "rec.json is a triage report",
         {"setup": _record("rec.json", TRIAGE_RECORD)}),
    ])
    add("calib", INT8, [("cache-dir-is-a-file", "--cache-dir {text}", "is a file; expected a folder")])
    add("triage", "{onnx} {fp16_onnx} --data {data}", [
        ("output-is-the-calib-record", "-o rec.json", "is a calibration record",
         {"setup": _record("rec.json", CALIB_RECORD)}),
        ("output-inside-data", "-o {data}/synth.json", "inside the input folder"),
    ])
    add("search", SEARCH, [
        ("grid-and-json-on-one-path", "--grid x.out --json x.out", "are the same file"),
        ("grid-inside-the-query-folder", "--grid {data}/query/grid.png", "inside the input folder"),
        ("json-is-a-checkpoint", "--json {ckpt}", "is a PyTorch checkpoint"),
        ("model-repeated", "-m {onnx} -m {other_ckpt}", "-m/--model given twice"),
    ])
    add("embed", EMBED, [
        ("output-is-a-checkpoint", "-o {ckpt}", "is a PyTorch checkpoint; not replacing it with a gallery"),
        ("output-inside-the-image-folder", "-o {data}/query/g.npz", "inside the input folder"),
        ("output-is-a-fifo", "-o fifo", "is a FIFO", {"setup": _fifo("fifo")}),
        ("output-repeated", "-o a.npz -o b.npz", "-o/--output given twice"),
    ])
    add("build", BUILD, [
        ("timing-cache-is-the-onnx", "--timing-cache {onnx}", "is the input"),
        ("timing-cache-is-a-checkpoint", "--timing-cache {ckpt}", "is a PyTorch checkpoint"),
        ("timing-cache-is-the-output", "--timing-cache m.engine", "m.engine"),
        ("cache-dir-is-a-file", "--cache-dir {text}", "is a file; expected a folder"),
        ("sidecar-is-the-calib-record", "-o rec", "rec.json is a calibration record",
         {"setup": _record("rec.json", CALIB_RECORD)}),
    ])
    add("bench", "{onnx} -o bench", [
        ("report-inside-the-images", "--images {data}/query -o {data}/query/bench", "inside the input folder"),
        ("report-file-is-a-checkpoint", "-o rep", "bench.json is a PyTorch checkpoint",
         {"setup": _copy_of("rep/bench.json", "ckpt")}),
    ])
    add("parity", PARITY, [("report-inside-data", "-o {data}/report", "inside the input folder")])
    add("bundle", BUNDLE, [("cache-dir-is-a-file", "--cache-dir {text}", "is a file; expected a folder")])
    add("synth", "-o data-out", [("output-repeated", "-o a -o b", "-o/--output given twice")])
    add("train", TRAIN, [("output-inside-data", "-o {data}/run", "inside the input folder")])
    return out


CASES = cases()

# the commands every case must name: all of the CLI's
COMMANDS = {"synth", "train", "eval", "export", "calib", "parity", "plugins compile", "plugins bench", "embed",
            "search", "bench", "build", "triage", "bundle", "verify", "demo", "doctor", "cameras"}


def test_the_table_covers_every_command_with_enough_cases():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(CASES) >= 85
    assert COMMANDS <= {c.command for c in CASES}


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fx(tmp_path_factory, market_synth, image_checkpoint, video_checkpoint):
    """Every input the cases read, under one root: {name: path}."""
    import onnx
    import torch

    from iaunet.calib.graph import set_props
    from iaunet.export.exporter import export_checkpoint
    from iaunet.train import save_checkpoint
    from iaunet.train.data.synth import generate_mars
    from tests.conftest import randomised_model

    root = tmp_path_factory.mktemp("bad_inputs")
    p = {"fx": root}
    p["data"] = root / "data"
    shutil.copytree(market_synth, p["data"])
    p["ckpt"] = root / "model" / "image.pt"
    p["ckpt"].parent.mkdir()
    shutil.copyfile(image_checkpoint, p["ckpt"])
    p["onnx"] = export_checkpoint(p["ckpt"], root / "model" / "model.onnx", "plugin", parity_batches=(1,)).path
    p["video_ckpt"] = root / "video" / "video.pt"
    p["video_ckpt"].parent.mkdir()
    shutil.copyfile(video_checkpoint, p["video_ckpt"])
    other = randomised_model("iaunet_r18")
    with torch.no_grad():
        other.bnneck.bias.add_(0.5)  # the same architecture, other weights: another checkpoint
    p["other_ckpt"] = save_checkpoint(root / "other" / "other.pt", other)

    bad = root / "bad"
    bad.mkdir()
    p["text"] = bad / "notes.txt"
    p["text"].write_text("not a model, not a data set\n")
    p["truncated_ckpt"] = bad / "truncated.pt"
    p["truncated_ckpt"].write_bytes(p["ckpt"].read_bytes()[: p["ckpt"].stat().st_size // 2])
    raw = torch.load(p["ckpt"], weights_only=True)
    raw["state_dict"]["bnneck.weight"][0] += 1.0  # weights changed on disk, checksum not
    p["tampered_ckpt"] = bad / "tampered.pt"
    torch.save(raw, p["tampered_ckpt"])
    p["truncated_onnx"] = bad / "truncated.onnx"
    p["truncated_onnx"].write_bytes(p["onnx"].read_bytes()[: p["onnx"].stat().st_size // 2])
    model = onnx.load(str(p["onnx"]))
    set_props(model, precision="fp16")
    p["ptx"] = root / "ptx"  # what --ptx names (the builder needs TensorRT before it reads it)
    p["ptx"].mkdir()
    p["fp16_onnx"] = bad / "marked_fp16.onnx"
    onnx.save(model, str(p["fp16_onnx"]))

    layouts = root / "layouts"
    p["empty"] = layouts / "empty"
    p["empty"].mkdir(parents=True)
    p["no_train"] = layouts / "no_train"
    shutil.copytree(p["data"] / "query", p["no_train"] / "query")
    p["only_train"] = layouts / "only_train"
    shutil.copytree(p["data"] / "bounding_box_train", p["only_train"] / "bounding_box_train")
    p["empty_splits"] = layouts / "empty_splits"
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (p["empty_splits"] / split).mkdir(parents=True)
    p["corrupt"] = layouts / "corrupt"
    shutil.copytree(p["data"], p["corrupt"])
    for image in sorted((p["corrupt"] / "bounding_box_train").glob("*.jpg")) + \
            sorted((p["corrupt"] / "query").glob("*.jpg"))[:1]:
        image.write_bytes(image.read_bytes()[:200])  # truncated JPEGs
    from iaunet.runtime.gallery import Gallery
    gallery = Gallery(512, "cd" * 32)  # another model's embedding space
    gallery.add(np.ones((2, 512), np.float32), ids=[1, 2])
    p["other_gallery"] = gallery.save(root / "other" / "gallery.npz")
    p["mars"] = root / "mars"
    generate_mars(p["mars"], identities=4, cameras=2, seed=1, tracklet_len=(2, 3))
    from iaunet.train.data.scenes import SceneSpec, generate_scenes
    p["scene"] = root / "scene"
    p["scene"].mkdir()
    generate_scenes(p["scene"], SceneSpec(cameras=2, seconds=1, fps=5, identities=4, seed=0, frame_size=(64, 48)))
    p["bad_tracks"] = bad / "bad.tracks.txt"
    p["bad_tracks"].write_text("1,1,5,5,10,20,1\n2,1,5,5,10,20,1\n3,1,5,5,10\n")
    return p


# --- snapshots ---------------------------------------------------------------------------

_DIGESTS: dict = {}


def _digest(path: Path, st) -> str:
    """SHA-256 of a file's bytes, remembered under (inode, size, mtime, ctime): any write
    changes ctime (set by the kernel), so an unchanged key means unchanged bytes."""
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def snapshot(root: Path) -> dict:
    """{relative path: what it is}: folders, symlinks (with target) and files (with hash)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", st.st_mode)
            elif not path.is_file():  # a FIFO: opening it to hash would block
                found[rel] = ("special", st.st_mode)
            else:
                found[rel] = ("file", st.st_mode, _digest(path, st))
    return found


def _output_of(argv: list) -> str | None:
    """The output path the command will use: the last -o/--output/--json value."""
    for i in range(len(argv) - 2, -1, -1):
        if argv[i] in ("-o", "--output", "--json"):
            return argv[i + 1]
    return None


def _listing(folder: Path):
    return sorted(os.listdir(folder)) if folder.is_dir() else None


def _run(argv: list) -> int:
    from iaunet.cli import main
    for handler in logging.getLogger("iaunet").handlers:  # log lines go to the stderr being captured
        if type(handler) is logging.StreamHandler:  # ours, not pytest's capture handlers
            handler.stream = sys.stderr  # (not setStream: it flushes the previous, closed, capture)
    try:
        return main(argv)
    except SystemExit as exc:  # argparse: usage errors, --help
        return exc.code if isinstance(exc.code, int) else 1


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, fx, tmp_path, monkeypatch, capfd):
    work = tmp_path / "work"
    work.mkdir()
    cwd = fx["fx"] if case.cwd == "fx" else work
    if case.setup:
        case.setup(work, fx)
    names = {k: str(v) for k, v in fx.items()}
    command = [] if case.command == "iaunet" else case.command.split()
    argv = command + [a.format(**names) for a in case.argv]
    output = _output_of(argv)
    out_parent = (cwd / output).parent if output else None
    watched = out_parent is not None and not str(out_parent.resolve()).startswith(("/proc", "/sys")) \
        and not out_parent.resolve().is_relative_to(tmp_path) \
        and not out_parent.resolve().is_relative_to(fx["fx"].resolve())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # a default cache would show up here
    monkeypatch.chdir(cwd)
    if case.machine:  # what pycuda and TensorRT would report on that GPU machine
        from iaunet.runtime.engine_card import Machine
        monkeypatch.setattr("iaunet.runtime.trt_runner.machine_facts", lambda device=0: Machine(*case.machine))
    before = (snapshot(fx["fx"]), snapshot(tmp_path), _listing(out_parent) if watched else None)
    output_existed = output is not None and os.path.lexists(cwd / output)
    capfd.readouterr()

    code = _run(argv)

    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code, f"exit {code}; stderr:\n{err}"
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, f"expected one line; stderr:\n{err}"
    prefix = "iaunet: error:" if case.command == "iaunet" else f"iaunet {case.command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in err
    assert case.expect in lines[0], lines[0]
    after = (snapshot(fx["fx"]), snapshot(tmp_path), _listing(out_parent) if watched else None)
    assert after[0] == before[0], f"inputs changed: {_diff(before[0], after[0])}"
    assert after[1] == before[1], f"working folder changed: {_diff(before[1], after[1])}"
    assert after[2] == before[2], f"output folder {out_parent} changed"
    if output is not None and not output_existed:
        assert not os.path.lexists(cwd / output), f"{output} was created"


def _diff(a: dict, b: dict) -> list:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:10]
