"""--precision: bf16 autocast in the training loop, fp32 for the spectral term, and what `auto` picks."""

import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.linalg.spectral import conv_singular_values, top_singular_values
from trainlock.locks.specdef import SpecDefConfig, specdef, specdef_loop
from trainlock.train import LoopConfig, accuracy, fit
from trainlock.train import precision as prec

CPU = torch.device("cpu")


def _cnn(task):
    torch.manual_seed(0)
    return tl.models.build("cnn", input_shape=task.input_shape, num_classes=10, channels=[8], hidden=32)


def _mlp(task):
    torch.manual_seed(0)
    return tl.models.build("mlp", input_shape=task.input_shape, num_classes=10, hidden=[32])


def _train(model, task, precision, steps=60):
    cfg = LoopConfig(optimizer="adam", lr=1e-2, max_steps=steps, batch_size=32, device="cpu", precision=precision)
    fit(model, task, cfg, progress=False)
    return accuracy(model, task.x_test, task.y_test)


@pytest.mark.parametrize("build", [_cnn, _mlp], ids=["cnn", "mlp"])
def test_bf16_accuracy_close_to_fp32(digits, build):
    fp32 = _train(build(digits), digits, "fp32")
    bf16 = _train(build(digits), digits, "bf16")
    assert fp32 > 0.8
    assert abs(bf16 - fp32) <= 0.05, (fp32, bf16)


def _activation_dtypes(digits, precision):
    model = _cnn(digits)
    seen: list[torch.dtype] = []
    model.head.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    fit(model, digits, LoopConfig(max_steps=2, device="cpu", precision=precision), progress=False)
    return seen, model


def test_autocast_active_only_in_bf16(digits):
    seen, model = _activation_dtypes(digits, "bf16")
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    seen, _ = _activation_dtypes(digits, "fp32")
    assert seen and set(seen) == {torch.float32}


def test_spectral_values_stay_fp32_under_autocast():
    torch.manual_seed(0)
    W = torch.randn(20, 12, requires_grad=True)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    ref, _ = top_singular_values(W, 2)
    ref_conv, _ = conv_singular_values(conv, (6, 6), 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16  # autocast is on here
        s, _ = top_singular_values(W, 2)
        s_conv, _ = conv_singular_values(conv, (6, 6), 1)
    assert s.dtype == torch.float32 and s_conv.dtype == torch.float32
    torch.testing.assert_close(s, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s_conv, ref_conv, rtol=1e-5, atol=1e-6)


def test_specdef_spectral_term_fp32_under_bf16(digits, monkeypatch):
    seen: list[torch.dtype] = []
    module = specdef.__globals__  # the namespace the lock's code reads (robust to tests that re-import trainlock)
    original = module["spectral_term"]

    def recording(lockables, k):
        s = original(lockables, k)
        seen.append(s.dtype)
        return s

    monkeypatch.setitem(module, "spectral_term", recording)
    cfg = SpecDefConfig(loop=specdef_loop(max_steps=3, batch_size=32, device="cpu", precision="bf16"))
    report = specdef(_cnn(digits), cfg, digits, progress=False)
    assert seen and set(seen) == {torch.float32}
    assert not report.stopped


def test_auto_resolution(monkeypatch):
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    attn = nn.Sequential(nn.MultiheadAttention(8, 2))
    monkeypatch.setattr(prec, "bf16_supported", lambda device: True)
    monkeypatch.setattr(prec, "fast_bf16_convolutions", lambda device: True)
    assert prec.resolve_precision("auto", cnn, CPU) == "bf16"
    assert prec.resolve_precision("auto", attn, CPU) == "bf16"
    assert prec.resolve_precision("auto", mlp, CPU) == "fp32"  # no conv, no attention
    # a CPU with avx512_bf16 but no AMX: bf16 convolutions measured slower (EfficientNet 0.69x), attention faster
    monkeypatch.setattr(prec, "fast_bf16_convolutions", lambda device: False)
    assert prec.resolve_precision("auto", cnn, CPU) == "fp32"
    assert prec.resolve_precision("auto", attn, CPU) == "bf16"
    both = nn.Sequential(nn.Conv2d(1, 8, 3), nn.MultiheadAttention(8, 2))  # a conv stem under attention
    assert prec.model_kind(both) == "transformer" and prec.resolve_precision("auto", both, CPU) == "bf16"
    monkeypatch.setattr(prec, "bf16_supported", lambda device: False)
    assert prec.resolve_precision("auto", cnn, CPU) == "fp32"
    # explicit choices are taken as given
    assert prec.resolve_precision("bf16", mlp, CPU) == "bf16"
    assert prec.resolve_precision("fp32", cnn, CPU) == "fp32"


def test_cpu_support_check(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not prec.bf16_supported(CPU)
    assert not prec.fast_bf16_convolutions(CPU)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert prec.bf16_supported(CPU) and not prec.fast_bf16_convolutions(CPU)  # avx512_bf16 alone
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert prec.bf16_supported(CPU) and prec.fast_bf16_convolutions(CPU)


def test_auto_in_fit_uses_the_resolution(digits, monkeypatch):
    monkeypatch.setattr(prec, "bf16_supported", lambda device: False)
    seen, _ = _activation_dtypes_auto(digits)
    assert set(seen) == {torch.float32}
    monkeypatch.setattr(prec, "bf16_supported", lambda device: True)
    monkeypatch.setattr(prec, "fast_bf16_convolutions", lambda device: True)
    seen, _ = _activation_dtypes_auto(digits)
    assert set(seen) == {torch.bfloat16}


def _activation_dtypes_auto(digits):
    return _activation_dtypes(digits, "auto")


def test_bad_precision_rejected():
    with pytest.raises(ValueError, match="precision"):
        LoopConfig(precision="fp16")
    assert LoopConfig().precision == "fp32"  # the default keeps existing numbers


def test_cli_bad_precision_exits_2(capsys):
    from trainlock.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--precision", "fp16", "mlp", "digits", "out"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precision" in err[0]
