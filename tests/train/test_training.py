import math

import pytest
import torch
import torch.nn.functional as F

import trainlock as tl
from trainlock.optimizers import make_optimizer
from trainlock.registry import UnknownNameError
from trainlock.train import LoopConfig, LoopHooks, accuracy, fit


def _mlp(task, hidden=(16,)):
    return tl.models.build("mlp", input_shape=task.input_shape, num_classes=task.num_classes, hidden=list(hidden))


def test_fit_learns_digits(digits):
    model = _mlp(digits)
    before = accuracy(model, digits.x_test, digits.y_test)
    res = fit(
        model, digits, LoopConfig(optimizer="adam", lr=1e-2, epochs=4, batch_size=32, device="cpu"), progress=False
    )
    after = accuracy(model, digits.x_test, digits.y_test)
    assert res.steps == 4 * math.ceil(len(digits.y_train) / 32)
    assert before < 0.3 and after > 0.85


def test_non_finite_loss_restores_last_good_state(digits):
    model = _mlp(digits)
    calls = {"n": 0}

    def loss_fn(m, x, y):
        calls["n"] += 1
        loss = F.cross_entropy(m(x), y)
        return (loss * float("nan") if calls["n"] == 7 else loss), {}

    cfg = LoopConfig(optimizer="sgd", lr=1e-2, epochs=1, batch_size=32, snapshot_every=5, device="cpu")
    res = fit(model, digits, cfg, loss_fn=loss_fn, progress=False)
    assert res.steps == 6 and "non-finite" in res.stopped and "step 7" in res.stopped
    assert "from step 5" in res.stopped
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_max_steps_and_callback_stop(digits):
    model = _mlp(digits)
    res = fit(model, digits, LoopConfig(max_steps=4, device="cpu"), progress=False)
    assert res.steps == 4
    res = fit(
        model,
        digits,
        LoopConfig(epochs=3, device="cpu"),
        hooks=LoopHooks(on_step=lambda s, l, e: s == 3),
        progress=False,
    )
    assert res.steps == 3 and "callback" in res.stopped


@pytest.mark.parametrize("epochs,max_steps", [(1, None), (2, None), (3, 5), (1, 10**6)])
def test_total_steps_is_what_fit_runs(digits, epochs, max_steps):
    task = digits.subset(n_train=100, seed=0)  # 100 / 32: four steps per epoch, the last one short
    cfg = LoopConfig(epochs=epochs, max_steps=max_steps, batch_size=32, device="cpu")
    assert cfg.steps_per_epoch(100) == 4
    assert fit(_mlp(task), task, cfg, progress=False).steps == cfg.total_steps(100)


def test_unknown_optimizer_lists_valid_names(digits):
    with pytest.raises(UnknownNameError, match=r"valid: adadelta, .*adam, .*sgd"):
        fit(_mlp(digits), digits, LoopConfig(optimizer="sgdd", device="cpu"), progress=False)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adadelta"])  # the zoo: test_optimizers.py
def test_every_optimizer_takes_a_step(name):
    w = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer(name, [w], lr=0.1)
    (w**2).sum().backward()
    opt.step()
    assert not torch.equal(w.detach(), torch.ones(3))


def test_bad_learning_rate():
    with pytest.raises(ValueError, match="positive"):
        make_optimizer("sgd", [torch.nn.Parameter(torch.ones(1))], lr=0.0)


def test_linear_schedule_is_transformers_linear_warmup():
    from trainlock.train.loop import linear_factor

    total, warm = 10, 3
    # transformers' get_linear_schedule_with_warmup, written out: step/warmup, then (total-step)/(total-warmup)
    expect = [0, 1 / 3, 2 / 3, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]
    assert [linear_factor(s, total, warm) for s in range(total)] == pytest.approx(expect)
    assert [linear_factor(s, 4, 0) for s in range(4)] == pytest.approx([1, 0.75, 0.5, 0.25])


def test_fit_with_linear_schedule_takes_the_scheduled_steps(digits):
    """Full-batch SGD (no momentum, no decay): w_{s+1} = w_s - lr * factor(s) * grad, replayed by hand."""
    task = digits.subset(n_train=64, seed=0)
    model = _mlp(task)
    ref = [p.detach().clone() for p in model.parameters()]
    cfg = LoopConfig(
        optimizer="sgd",
        lr=0.5,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=64,
        epochs=4,
        schedule="linear",
        warmup_steps=1,
        device="cpu",
    )
    fit(model, task, cfg, progress=False)
    manual = _mlp(task)
    with torch.no_grad():
        for p, r in zip(manual.parameters(), ref, strict=False):
            p.copy_(r)
    for _s, factor in enumerate([0.0, 1.0, 2 / 3, 1 / 3]):
        manual.zero_grad()
        F.cross_entropy(manual(task.x_train), task.y_train).backward()
        with torch.no_grad():
            for p in manual.parameters():
                p -= 0.5 * factor * p.grad
    for p, q in zip(model.parameters(), manual.parameters(), strict=False):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        LoopConfig(schedule="cosine")


def test_eval_batch_size_small_for_images_on_cpu_and_predict_does_not_depend_on_it():
    from trainlock.train.metrics import eval_batch_size, predict

    images, tokens = torch.rand(5, 1, 8, 8), torch.zeros(5, 3, 7, dtype=torch.long)
    assert eval_batch_size(images) == 32 and eval_batch_size(images, "cuda") == 1024
    assert eval_batch_size(tokens) == eval_batch_size(tokens, "cuda") == 64
    torch.manual_seed(0)
    model = tl.models.build("cnn", input_shape=[1, 8, 8], num_classes=10, channels=[4, 8], hidden=16)
    x = torch.rand(100, 1, 8, 8)
    torch.testing.assert_close(predict(model, x), predict(model, x, batch_size=1024), rtol=1e-5, atol=1e-6)
