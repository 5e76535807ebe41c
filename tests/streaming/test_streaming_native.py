"""Tests of the compiled streaming step (custom_modules.streaming.native, backend="native").

The C step must compute what the PyTorch step computes (frame by frame, with
its TCM history) for every engine layout the fused step supports. Streaming
like the offline model on real speech (full-size model, trained checkpoint,
10 minutes) is tested for this backend beside the others in
tests/streaming/test_streaming.py. Packing mistakes and a missing compiler must give
clear errors.
"""

import numpy as np
import pytest
import torch

from custom_modules.streaming import (
    FusedUNetStep,
    TcmHistory,
    native,
)
from tests.streaming.test_streaming import (
    ENGINE_CONFIGS,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_engine,
)


@pytest.mark.parametrize("name", sorted(ENGINE_CONFIGS))
def test_native_step_computes_the_pytorch_step_frame_by_frame(name):
    engine = random_engine(ENGINE_CONFIGS[name], seed=7)
    step = FusedUNetStep(engine)
    runner = native.NativeStepRunner(step)
    eager_history = TcmHistory(**step.history_config())
    native_history = TcmHistory(**step.history_config())
    generator = torch.Generator().manual_seed(1)
    largest = 0.0
    with torch.inference_mode():
        for frame in range(100):  # beyond the largest dilation span: every tap is exercised
            spec = 2.0 * torch.randn(engine.num_freqs, 2, generator=generator)
            expected, expected_present = step(spec, torch.from_numpy(eager_history.past()))
            got, present = runner(spec.numpy(), native_history.past())
            scale = expected.abs().max().item()
            np.testing.assert_allclose(got, expected.numpy(), atol=1e-5 * scale, err_msg=frame)
            np.testing.assert_allclose(
                present, expected_present.numpy(), atol=1e-4
            )  # O(1): normalised
            eager_history.push(expected_present.numpy())
            native_history.push(present)
            largest = max(largest, scale)
    assert largest > 0.1  # non-trivial outputs


def test_library_is_built_once_per_source_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("SBE_NATIVE_CACHE", str(tmp_path / "cache"))
    first = native.build_library()
    built_at = first.stat().st_mtime_ns
    assert native.build_library() == first and first.stat().st_mtime_ns == built_at
    assert list(first.parent.iterdir()) == [first]  # no temporary files left behind


def test_bad_packing_and_missing_compiler_are_clear_errors(tmp_path, monkeypatch):
    engine = random_engine(ENGINE_CONFIGS["small"], seed=2)
    step = FusedUNetStep(engine)
    plan, weights = native.pack_step(step)
    monkeypatch.setattr(native, "pack_step", lambda _: (plan, weights[:-1]))
    with pytest.raises(ValueError, match="shorter than the model needs"):
        native.NativeStepRunner(step)
    longer = np.concatenate([weights, np.zeros(1, np.float32)])
    monkeypatch.setattr(native, "pack_step", lambda _: (plan, longer))
    with pytest.raises(ValueError, match="longer than the model needs"):
        native.NativeStepRunner(step)
    bad_index = plan.copy()
    bad_index[10 + 5] = 10_000  # first gather index of the first encoder layer
    monkeypatch.setattr(native, "pack_step", lambda _: (bad_index, weights))
    with pytest.raises(ValueError, match="encoder index out of range"):
        native.NativeStepRunner(step)
    monkeypatch.setenv("SBE_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-compiler-sbe")
    with pytest.raises(RuntimeError, match="C compiler: 'no-such-compiler-sbe' was not found"):
        native.build_library()
