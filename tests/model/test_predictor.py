"""The Predictor: output contract, fast-path equivalences, tiling and out-of-memory fallbacks."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from model import predictor as predictor_module
from model.cpufuse import FusedConv2d, fusion_available
from model.predictor import (
    PredictionError,
    Predictor,
    cpu_has_native_bf16,
    fold_batchnorm,
    native_bf16_in_flags,
    pick_device,
    pick_dtype,
    upsample_argmax,
    working_size,
)

from .helpers import tiny_model


def rng_image(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def loaded():
    return tiny_model(num_classes=3)


@pytest.mark.parametrize("shape", [(50, 70, 3), (33, 17, 3), (40, 40), (40, 41, 4), (30, 30, 1)])
def test_output_is_at_original_size(loaded, shape) -> None:
    p = Predictor(loaded, device="cpu", precision="fp32")
    image = rng_image(*shape[:2], channels=shape[2] if len(shape) == 3 else 0)
    pred = p.predict(image)
    assert pred.labels.shape == shape[:2] and pred.labels.dtype == np.uint8
    assert pred.confidence.shape == shape[:2] and pred.confidence.dtype == np.uint8
    assert pred.labels.max() < 3
    # max softmax of 3 classes is at least 1/3
    assert pred.confidence.min() >= 84 and 0.33 <= pred.mean_confidence <= 1.0


def test_matches_a_plain_fp32_reference(loaded) -> None:
    """Our fp32 path (BN folded, channels-last, band upsampling) equals the textbook computation."""
    image = rng_image(45, 60, seed=3)
    p = Predictor(loaded, device="cpu", precision="fp32")
    pred = p.predict(image)
    meta = loaded.meta
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(
        x, size=working_size(45, 60, meta.input_size), mode="bilinear", align_corners=False, antialias=True
    )
    x = (x / 255 - torch.tensor(meta.mean).view(1, 3, 1, 1)) / torch.tensor(meta.std).view(1, 3, 1, 1)
    with torch.no_grad():
        net = loaded.network.eval()
        logits = net.classifier(net.backbone(x)["out"])  # feature resolution
        logits = F.interpolate(logits, size=(45, 60), mode="bilinear", align_corners=False)
    probs = logits.softmax(1)[0]
    expected = probs.argmax(0).numpy()
    assert (pred.labels == expected).mean() > 0.999
    conf = (probs.max(0).values * 255).numpy()
    assert np.abs(pred.confidence.astype(float) - conf).max() <= 1.5


def test_band_upsampling_equals_interpolate() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 13, 17)
    labels, conf = upsample_argmax(logits, 40, 29, band_bytes=5 * 29 * 4 * 3 * 3)  # 3 rows per band
    ref = F.interpolate(logits[None], size=(40, 29), mode="bilinear", align_corners=False)[0]
    assert np.array_equal(labels, ref.argmax(0).numpy())
    assert np.abs(conf.astype(float) - ref.softmax(0).max(0).values.numpy() * 255).max() <= 0.51


def test_folding_batchnorm_keeps_outputs(loaded) -> None:
    import copy

    net = copy.deepcopy(loaded.network).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)["out"]
        fold_batchnorm(net)
        after = net(x)["out"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(before, after, atol=1e-4)


def test_batches_give_the_same_answer_as_single_images(loaded) -> None:
    images = [rng_image(48, 64, seed=s) for s in range(3)] + [rng_image(30, 20, seed=9)]
    p = Predictor(loaded, device="cpu", precision="fp32", batch_size=4)
    batch = p.predict_batch(images)
    for im, b in zip(images, batch):
        single = p.predict(im)
        assert (single.labels == b.labels).mean() > 0.999


def test_large_images_are_tiled(loaded, monkeypatch) -> None:
    p = Predictor(loaded, device="cpu", precision="fp32", max_input_pixels=64 * 64, tile_size=64, tile_overlap=16)
    seen: list[tuple[int, ...]] = []
    real = p._forward

    def spy(x):
        seen.append(tuple(x.shape))
        return real(x)

    monkeypatch.setattr(p, "_forward", spy)
    image = rng_image(64, 200, seed=1)  # working size 64x200 > 64*64 pixels
    pred = p.predict(image)
    assert pred.labels.shape == (64, 200)
    assert len(seen) >= 4 and all(s[-2] <= 64 and s[-1] <= 64 for s in seen)


def test_out_of_memory_halves_the_batch_then_tiles(loaded, monkeypatch) -> None:
    p = Predictor(loaded, device="cpu", precision="fp32", batch_size=4, tile_size=64, min_tile=32)
    real = p._forward
    calls: list[tuple[int, ...]] = []

    def flaky(x):
        calls.append(tuple(x.shape))
        if x.shape[0] > 1 or x.shape[-1] > 64:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x)

    monkeypatch.setattr(p, "_forward", flaky)
    images = [rng_image(64, 128, seed=s) for s in range(4)]
    preds = p.predict_batch(images)
    assert len(preds) == 4 and all(pr.labels.shape == (64, 128) for pr in preds)
    assert calls[0][0] == 4 and any(c[0] == 1 and c[-1] <= 64 for c in calls)


def test_out_of_memory_everywhere_is_reported_clearly(loaded, monkeypatch) -> None:
    p = Predictor(loaded, device="cpu", precision="fp32")

    def always(x):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(p, "_forward", always)
    with pytest.raises(PredictionError, match="out of memory even for one 256-pixel tile"):
        p.predict(rng_image(600, 600))


def test_device_and_precision_choice(monkeypatch) -> None:
    assert pick_device("auto").type in ("cuda", "mps", "cpu")
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(PredictionError, match="no CUDA GPU"):
            pick_device("cuda")
    monkeypatch.setattr(predictor_module, "cpu_has_native_bf16", lambda: False)
    assert pick_dtype(torch.device("cpu"), "auto") == torch.float32
    monkeypatch.setattr(predictor_module, "cpu_has_native_bf16", lambda: True)
    assert pick_dtype(torch.device("cpu"), "auto") == torch.bfloat16
    with pytest.raises(PredictionError, match="fp16 is not supported on the CPU"):
        pick_dtype(torch.device("cpu"), "fp16")


def test_description_says_what_is_used(loaded) -> None:
    assert Predictor(loaded, device="cpu", precision="fp32").description == "CPU, fp32"
    assert Predictor(loaded, device="cpu", precision="bf16").description == "CPU, bf16"


def test_bf16_path_runs_and_mostly_agrees(loaded) -> None:
    image = rng_image(64, 64, seed=5)
    a = Predictor(loaded, device="cpu", precision="fp32").predict(image)
    b = Predictor(loaded, device="cpu", precision="bf16").predict(image)
    assert b.labels.shape == a.labels.shape
    # random weights give near-ties; this only guards against a broken bf16 path
    assert (a.labels == b.labels).mean() > 0.6


def test_predict_files_keeps_order_and_reports_bad_files(loaded, tmp_path) -> None:
    from PIL import Image

    paths = []
    for i, size in enumerate([(40, 30), (40, 30), (20, 25), (40, 30)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng_image(size[1], size[0], seed=i)).save(p)
        paths.append(p)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    paths.insert(2, bad)
    pred = Predictor(loaded, device="cpu", precision="fp32", batch_size=2)
    out = list(pred.predict_files(paths))
    assert [p for p, _ in out] == paths
    from annotation.errors import ImageReadError

    assert isinstance(out[2][1], ImageReadError) and "bad.png" in str(out[2][1])
    assert out[3][1].labels.shape == (25, 20)


# /proc/cpuinfo flag lists, shortened to what matters here.
SKYLAKE_SP = "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
COOPER_LAKE = SKYLAKE_SP + " avx512_bf16"
SAPPHIRE_RAPIDS = SKYLAKE_SP + " amx_tile amx_int8 amx_bf16"
HASWELL = "fpu sse4_2 avx avx2 fma bmi2"


@pytest.mark.parametrize(
    ("flags", "native"),
    [(SKYLAKE_SP, False), (COOPER_LAKE, True), (SAPPHIRE_RAPIDS, True), (HASWELL, False), ("", False)],
    ids=["avx512bw-emulated", "avx512_bf16", "amx_bf16", "avx2-only", "empty"],
)
def test_native_bf16_needs_avx512_bf16_or_amx(flags: str, native: bool) -> None:
    assert native_bf16_in_flags(flags) is native


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: {COOPER_LAKE}\nbugs\t\t: spectre_v1\n")
    flags = predictor_module._cpuinfo_flags(info)
    assert flags is not None and native_bf16_in_flags(flags)
    info.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # aarch64: no x86 flags line
    assert predictor_module._cpuinfo_flags(info) is None
    assert predictor_module._cpuinfo_flags(tmp_path / "missing") is None


def test_native_bf16_also_needs_onednn_bf16_and_is_cached(monkeypatch) -> None:
    cpu_has_native_bf16.cache_clear()
    try:
        monkeypatch.setattr(predictor_module, "_cpuinfo_flags", lambda: SAPPHIRE_RAPIDS)
        monkeypatch.setattr(predictor_module, "onednn_bf16_usable", lambda: False)
        assert cpu_has_native_bf16() is False
        cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(predictor_module, "onednn_bf16_usable", lambda: True)
        assert cpu_has_native_bf16() is True
        monkeypatch.setattr(predictor_module, "_cpuinfo_flags", lambda: SKYLAKE_SP)
        assert cpu_has_native_bf16() is True  # cached: the CPU does not change under a process
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16() is False
        # without /proc/cpuinfo (macOS, Windows) PyTorch's own CPU probes decide
        monkeypatch.setattr(predictor_module, "_cpuinfo_flags", lambda: None)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16() is False
    finally:
        cpu_has_native_bf16.cache_clear()


needs_fusion = pytest.mark.skipif(
    not fusion_available(),
    reason="needs oneDNN's fused convolution ops (torch.ops.mkldnn._convolution_pointwise), absent here",
)


@needs_fusion
def test_a_fused_op_failing_mid_batch_switches_to_the_plain_network(loaded, tmp_path, monkeypatch, caplog) -> None:
    from PIL import Image

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng_image(48, 64, seed=i)).save(paths[-1])
    p = Predictor(loaded, device="cpu", precision="fp32", batch_size=2)
    assert p.fused
    stem = next(m for m in p.network.modules() if isinstance(m, FusedConv2d))
    real = stem.forward
    calls = []

    def fails_second_time(x):
        calls.append(x.shape[0])
        if len(calls) == 2:
            raise RuntimeError("could not create a primitive descriptor (simulated)")
        return real(x)

    monkeypatch.setattr(stem, "forward", fails_second_time)
    with caplog.at_level(logging.WARNING, logger="atrous.predictor"):
        out = list(p.predict_files(paths))
    assert [q for q, _ in out] == paths
    assert calls == [2, 2], "after the failure the fused network is never called again"
    assert not p.fused and "simulated" in (p.fusion_error or "")
    assert len([r for r in caplog.records if r.name == "atrous.predictor"]) == 1
    plain = list(Predictor(loaded, device="cpu", precision="fp32", batch_size=2, fuse=False).predict_files(paths))
    for i, ((_, got), (_, want)) in enumerate(zip(out, plain)):
        assert not isinstance(got, Exception), got
        if i < 2:  # the first batch went through the fused network
            assert (got.labels == want.labels).mean() > 0.999
        else:  # the failed batch was recomputed, and the rest run, with the plain network
            assert np.array_equal(got.labels, want.labels) and np.array_equal(got.confidence, want.confidence)


@needs_fusion
def test_running_out_of_memory_in_a_fused_op_keeps_the_fused_path(loaded, monkeypatch) -> None:
    p = Predictor(loaded, device="cpu", precision="fp32")
    stem = next(m for m in p.network.modules() if isinstance(m, FusedConv2d))

    def no_memory(x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes (simulated)")

    monkeypatch.setattr(stem, "forward", no_memory)
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        p.predict(rng_image(48, 64))
    assert p.fused and p.fusion_error is None  # memory is not the fused op's fault


def test_a_retry_after_out_of_memory_starts_with_the_failed_attempts_memory_freed(loaded, monkeypatch) -> None:
    import weakref

    p = Predictor(loaded, device="cpu", precision="fp32", batch_size=4)
    real = p._forward
    attempts: list[weakref.ref] = []
    alive_at_retry: list[int] = []

    def flaky(x):
        activations = torch.ones(1024)  # stands for what the failed forward had allocated
        alive_at_retry.append(sum(r() is not None for r in attempts))
        attempts.append(weakref.ref(activations))
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x)

    monkeypatch.setattr(p, "_forward", flaky)
    preds = p.predict_batch([rng_image(48, 64, seed=s) for s in range(4)])
    assert len(preds) == 4 and p.oom_retries == 3  # 4 -> 2 + 2 -> 1 + 1 + 1 + 1
    # The exception's traceback would keep a failed attempt's tensors alive while the retry runs.
    assert alive_at_retry == [0] * len(alive_at_retry)


def test_out_of_memory_while_preparing_the_input_splits_the_batch(loaded, monkeypatch) -> None:
    p = Predictor(loaded, device="cpu", precision="fp32", batch_size=4)
    images = [rng_image(48, 64, seed=s) for s in range(4)]
    expected = [p.predict(im) for im in images]
    real = p._to_input

    def big_batches_fail(ims, size):
        if len(ims) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(ims, size)

    monkeypatch.setattr(p, "_to_input", big_batches_fail)
    preds = p.predict_batch(images)
    assert p.oom_retries == 3
    for got, want in zip(preds, expected):
        assert np.array_equal(got.labels, want.labels) and np.array_equal(got.confidence, want.confidence)

    def always(ims, size):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(p, "_to_input", always)
    with pytest.raises(PredictionError, match="out of memory preparing one 64x48 image"):
        p.predict(images[0])


def test_an_extreme_aspect_ratio_is_capped_not_a_28_gb_allocation() -> None:
    """#17 I10: a 1x5000 PNG at input size 520 asked for 520x2,600,000 activations."""
    from model.data import MAX_ASPECT, scaled_size

    assert working_size(360, 480, 520) == (520, 693)  # ordinary images are unchanged
    h, w = working_size(1, 5000, 520)
    assert w == MAX_ASPECT * 520 and h == 1
    assert scaled_size(5000, 3, 520) == working_size(5000, 3, 520)
    assert working_size(1, 5000, None) == (1, 5000)


def test_a_one_pixel_high_strip_is_predicted(loaded) -> None:
    pred = Predictor(loaded, device="cpu", precision="fp32").predict(np.full((1, 700, 3), 128, np.uint8))
    assert pred.labels.shape == (1, 700)
