"""Tests of the ONNX export of the streaming UNet-TCM (custom_modules.streaming.export).

The exported one-frame step, run under onnxruntime chunk by chunk, must match
the PyTorch step (allclose) and therefore the offline model; the export
command line works on a run folder written by the recipe.
"""

import json

import numpy as np
import onnx
import pytest
import torch

from custom_modules.inference.run_loading import load_run
from custom_modules.models.unet_tcm import ComplexSpectralMapping, UNetEngine
from custom_modules.streaming import StreamingEnhancer
from custom_modules.streaming.equivalence import noisy_speech, offline, stream_chunks
from custom_modules.streaming.export import main
from custom_modules.streaming.onnx_step import (
    METADATA_KEY,
    export_model,
    onnx_runner,
    read_metadata,
)
from tests.streaming.test_streaming import (
    ENGINE_CONFIGS,
    TOLERANCE,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_engine,
)


def assert_chunks_match(eager, exported, signal, atol=1e-5):
    """Both enhancers chunk by chunk on ``signal``: every output chunk allclose."""
    eager.reset()
    exported.reset()
    hop = eager.chunk_size
    usable = signal[: signal.size // hop * hop]
    for index, chunk in enumerate(usable.reshape(-1, hop)):
        np.testing.assert_allclose(
            exported.process_chunk(chunk), eager.process_chunk(chunk), atol=atol,
            err_msg=f"chunk {index}",
        )  # fmt: skip


@pytest.mark.real_audio
@pytest.mark.parametrize("config", ["small", "batch_norm"])
@pytest.mark.parametrize("level_normalization", [False, True])
def test_onnx_step_matches_pytorch_chunk_by_chunk(config, level_normalization, real_audio_dir):
    engine = random_engine(ENGINE_CONFIGS[config], seed=11)
    model = ComplexSpectralMapping(engine, level_normalization=level_normalization).eval()
    signal = noisy_speech(real_audio_dir, seconds=3.0, seed=3)
    eager = StreamingEnhancer.from_model(model, backend="eager")
    exported = StreamingEnhancer.from_model(model, backend="onnx")
    assert exported.latency_samples == eager.latency_samples == 159
    assert_chunks_match(eager, exported, signal)
    streamed = stream_chunks(exported, signal)
    aligned = streamed[159 : 159 + signal.size]
    assert np.abs(aligned - offline(model, signal)).max() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.real_audio
def test_export_cli_on_a_trained_run(unet_tcm_cpu_demo_run, real_audio_dir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["--run", str(unet_tcm_cpu_demo_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exported" in printed and "OK" in printed, printed
    meta = read_metadata(out.read_bytes(), str(out))
    assert meta["n_fft"] == 320 and meta["hop_length"] == 160 and meta["sample_rate"] == 16000
    assert meta["history"]["dilations"] == [1, 2, 4, 8, 16]  # unet_cpu.yaml
    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["spec", "past"]
    assert [o.name for o in proto.graph.output] == ["enhanced", "present"]

    loaded = load_run(unet_tcm_cpu_demo_run)
    assert (meta["level_decay"] is not None) == bool(loaded.model.level_normalization)
    signal = noisy_speech(real_audio_dir, seconds=10.5, seed=4)
    exported = StreamingEnhancer.from_onnx(out)
    eager = StreamingEnhancer.from_run(unet_tcm_cpu_demo_run, backend="eager")
    assert_chunks_match(eager, exported, signal)
    streamed = stream_chunks(exported, signal)
    aligned = streamed[exported.latency_samples : exported.latency_samples + signal.size]
    expected = offline(loaded.model, signal)
    assert np.sqrt(np.mean(expected**2)) > 1e-4
    assert np.abs(aligned - expected).max() <= TOLERANCE


def test_export_errors_name_the_file(tmp_path, capsys):
    engine = UNetEngine(
        num_layers=2, channels=4, bottleneck_dim=8, tcm_hidden=4, tcm_dilations=(1,)
    )
    proto = onnx.load_from_string(export_model(ComplexSpectralMapping(engine)))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert meta["level_decay"] is None and meta["past_shape"] == [8, 20]  # 2 TCMs x 4 paths
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match=rf"{bare}.*no 'sb_enhance.streaming' metadata"):
        StreamingEnhancer.from_onnx(bare)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=rf"{junk}: not an ONNX model"):
        onnx_runner(junk)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        onnx_runner(tmp_path / "missing.onnx")
    assert main(["--run", str(tmp_path / "no_run"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_exported_graph_is_deterministic_and_self_contained():
    engine = random_engine(ENGINE_CONFIGS["small"], seed=2)
    model = ComplexSpectralMapping(engine, level_normalization=True)
    first, second = export_model(model), export_model(model)
    assert first == second
    runner, meta = onnx_runner(first)
    assert meta["level_decay"] == pytest.approx(model.norm_decay)
    spec = np.random.default_rng(0).standard_normal((161, 2)).astype(np.float32)
    past = np.zeros(meta["past_shape"], dtype=np.float32)
    enhanced, present = runner(spec, past)
    assert enhanced.shape == (161, 2) and present.shape == tuple(meta["present_shape"])
    with torch.inference_mode():
        from custom_modules.streaming import FusedUNetStep

        expected, expected_present = FusedUNetStep(engine)(
            torch.from_numpy(spec), torch.from_numpy(past)
        )
    np.testing.assert_allclose(enhanced, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(present, expected_present.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("low", "high", "form", "node"),
    [(-0.5, 1.0, "max", "Max"), (1.0, 2.0, "min", "Min"), (-0.5, 1.5, "mixed", "Relu")],
)
def test_exported_prelu_forms_equal_the_pytorch_step(low, high, form, node):
    """Slopes <= 1 export as Max(x, x*s), >= 1 as Min(x, x*s), mixed as Relu + Min*s: all exact."""
    engine = random_engine(ENGINE_CONFIGS["small"], seed=4)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for module in engine.modules():
            if isinstance(module, torch.nn.PReLU):
                module.weight.copy_(
                    low + (high - low) * torch.rand(module.weight.shape, generator=generator)
                )
    model = ComplexSpectralMapping(engine, level_normalization=True).eval()
    from custom_modules.streaming import FusedUNetStep

    step = FusedUNetStep(engine)
    forms = step.prelu_forms
    used = set(forms["encoder"]) | {f for pair in forms["tcm"] for f in pair}
    used |= set(forms["decoder"]) - {None}
    assert form in used and (form == "mixed" or used == {form})  # mixed: most layers
    proto = export_model(model)
    op_types = {n.op_type for n in onnx.load_from_string(proto).graph.node}
    assert node in op_types and "PRelu" not in op_types and "Expand" not in op_types
    runner, meta = onnx_runner(proto)
    rng = np.random.default_rng(1)
    for _ in range(3):  # random frames and states: both signs at every PReLU
        spec = rng.standard_normal((161, 2)).astype(np.float32)
        past = rng.standard_normal(meta["past_shape"]).astype(np.float32)
        enhanced, present = runner(spec, past)
        with torch.inference_mode():
            expected, expected_present = step(torch.from_numpy(spec), torch.from_numpy(past))
        np.testing.assert_allclose(enhanced, expected.numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(present, expected_present.numpy(), atol=1e-5, rtol=1e-5)
