"""The distillation locks' `augment` option (trainlock.locks.augment): crops, flips and mixup on images, token
dropout and swaps on token ids, and that teacher and student are shown the same augmented view."""

import copy
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import trainlock as tl
from trainlock.locks import LOCKS
from trainlock.locks import augment as A
from trainlock.locks.fresh_distill import FreshDistillConfig, FreshDistillLock, distill
from trainlock.locks.undo import UndoConfig
from trainlock.train import LoopConfig

PAD, CLS, SEP, UNK = 0, 2, 3, 1


def images(n=16, seed=0):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def tokens():
    """(4, 3, 10) token inputs: ids, attention mask, token types; rows padded to different lengths."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 30, (4, 10), generator=g)
    lengths = [10, 7, 4, 2]
    mask = torch.zeros(4, 10, dtype=torch.long)
    types = torch.zeros(4, 10, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, 0], ids[i, n - 1], ids[i, n:] = CLS, SEP, PAD
        types[i, n // 2 : n] = 1
    return torch.stack([ids, mask, types], dim=1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the option


@pytest.mark.parametrize("cfg", [FreshDistillConfig, UndoConfig])
def test_a_bad_kind_is_refused_naming_the_option(cfg):
    with pytest.raises(ValueError, match="augment must be one of"):
        cfg(augment="colour")
    assert cfg().augment == "none"


def test_inputs_that_do_not_fit_the_kind_are_refused_naming_the_option():
    with pytest.raises(ValueError, match=r"augment='images'.*\(N, C, H, W\)"):
        A.check_inputs("fresh-distill", "images", torch.rand(5, 64))  # a flat MLP input
    with pytest.raises(ValueError, match="augment='images'"):
        A.Augmenter("images")(tokens())
    with pytest.raises(ValueError, match="augment='text'"):
        A.Augmenter("text")(images())
    A.check_inputs("x", "images", images())
    A.check_inputs("x", "text", tokens())


def test_images_on_a_flat_task_fail_before_training(digits):
    flat = tl.tasks.Task(
        "digits-flat", digits.x_train.flatten(1), digits.y_train, digits.x_test.flatten(1), digits.y_test, 10
    )
    mlp = tl.models.build("mlp", input_shape=[64], num_classes=10, hidden=[8])
    for name in ("fresh-distill", "undo"):
        lock = LOCKS.get(name).from_config({"augment": "images", "seed": 1, "loop": {"max_steps": 1}})
        with pytest.raises(ValueError, match=f"{name}: augment='images'"):
            lock.apply(mlp, flat)


# ---------------------------------------------------------------- images


def test_a_flip_is_a_mirror_image_of_the_flipped_rows_only():
    x = images()
    out, flipped = A.random_flip(x, 0.5, gen())
    assert out.shape == x.shape and flipped.dtype == torch.bool and 0 < int(flipped.sum()) < len(x)
    torch.testing.assert_close(out[flipped], x[flipped].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(out[~flipped], x[~flipped], rtol=0, atol=0)
    assert torch.equal(A.random_flip(x, 1.0, gen())[0], x.flip(-1)) and torch.equal(A.random_flip(x, 0.0)[0], x)


def test_a_crop_is_a_window_of_the_padded_image():
    x = images()
    assert torch.equal(A.random_crop(x, 0, gen()), x)
    out = A.random_crop(x, 2, gen())
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows), i
    assert torch.equal(out, A.random_crop(x, 2, gen()))  # the same generator state, the same crops


def test_mixup_is_a_convex_combination_of_two_rows_of_the_batch():
    x = images(32)
    out, mixed, partner, lam = A.mixup(x, 0.5, gen())
    assert out.shape == x.shape and mixed.shape == (32,) and 0 < int(mixed.sum()) < 32
    assert bool(((lam >= 0) & (lam <= 1)).all()) and not bool((partner[mixed] == torch.arange(32)[mixed]).any())
    want = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[partner]
    torch.testing.assert_close(out[mixed], want[mixed])
    assert torch.equal(out[~mixed], x[~mixed])
    assert out.min() >= x.min() and out.max() <= x.max()  # convex: inside the inputs' range


def test_the_images_augmenter_keeps_shape_dtype_and_marks_the_rows_that_keep_their_label():
    x = images(64)
    out, plain = A.Augmenter("images", generator=gen())(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert plain.shape == (64,) and plain.dtype == torch.bool and 0 < int(plain.sum()) < 64
    assert not torch.equal(out, x)
    same, _ = A.Augmenter("images", generator=gen())(x)
    assert torch.equal(out, same)  # seeded: reproducible
    assert A.Augmenter("none")(x) == (x, None)


# ---------------------------------------------------------------- text


def test_token_dropout_changes_only_editable_ids_to_the_fill_token():
    x = tokens()
    out = A.token_dropout(x, 0.5, fill_id=UNK, protect=(PAD, CLS, SEP), generator=gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[:, 1:], x[:, 1:])  # attention mask and token types untouched
    changed = out[:, 0] != x[:, 0]
    assert bool(changed.any()) and bool((out[:, 0][changed] == UNK).all())
    assert not bool(changed[x[:, 1] == 0].any())  # padding stays padding
    special = torch.isin(x[:, 0], torch.tensor([PAD, CLS, SEP]))
    assert torch.equal(out[:, 0][special], x[:, 0][special])
    # no fill token: replaced by tokens of the batch (still never on padding or special tokens)
    free = A.token_dropout(x, 0.5, protect=(PAD, CLS, SEP), generator=gen())
    pool = set(x[:, 0][A.editable(x, (PAD, CLS, SEP))].tolist())
    assert set(free[:, 0][free[:, 0] != x[:, 0]].tolist()) <= pool and torch.equal(free[:, 1:], x[:, 1:])


def test_token_swaps_permute_editable_neighbours_within_each_row():
    x = tokens()
    out = A.token_swap(x, 1.0, protect=(PAD, CLS, SEP), generator=gen())
    assert torch.equal(out[:, 1:], x[:, 1:])
    for row_in, row_out in zip(x[:, 0], out[:, 0], strict=True):
        assert sorted(row_in.tolist()) == sorted(row_out.tolist())  # the same ids, moved
    special = torch.isin(x[:, 0], torch.tensor([PAD, CLS, SEP]))
    assert torch.equal(out[:, 0][special], x[:, 0][special])
    # p=1: the first row's 8 editable tokens (positions 1..8) are swapped in pairs (1,2), (3,4), ...
    assert out[0, 0, 1:9].tolist() == x[0, 0, 1:9].view(4, 2).flip(1).flatten().tolist()
    assert torch.equal(A.token_swap(x, 0.0), x)


def test_the_text_augmenter_reads_the_tokenizer():
    tok = SimpleNamespace(mask_token_id=None, unk_token_id=UNK, all_special_ids=[PAD, UNK, CLS, SEP])
    aug = A.Augmenter.for_model("text", SimpleNamespace(tokenizer=tok))
    assert aug.fill_id == UNK and set(aug.protect) == {PAD, UNK, CLS, SEP}
    tok.mask_token_id = 99
    assert A.Augmenter.for_model("text", SimpleNamespace(tokenizer=tok)).fill_id == 99
    x = tokens()
    out, plain = aug(x)
    assert plain is None and torch.equal(out[:, 1:], x[:, 1:])
    assert A.Augmenter.for_model("images", nn.Linear(2, 2)).fill_id is None


# ---------------------------------------------------------------- in the locks


class Spy(nn.Module):
    """An image classifier that notes every input it is shown (the list is shared by its deep copies, so the
    lock's teacher, a copy of the base, writes to the same one as the student)."""

    seen: ClassVar[list] = []

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        Spy.seen.append(x.detach().clone())
        return self.lin(x.flatten(1))


def test_teacher_and_student_see_the_same_augmented_batch(digits):
    base, student = Spy(), Spy()
    Spy.seen.clear()
    cfg = FreshDistillConfig(
        augment="images", loop=LoopConfig(max_steps=3, batch_size=16, device="cpu", optimizer="adam")
    )
    base_acc = tl.train.evaluate(base, digits)  # evaluation is never augmented: it shows the raw test inputs
    raw = set(map(bytes, (r.numpy().tobytes() for r in digits.x_train)))
    Spy.seen.clear()
    report = distill(FreshDistillLock(cfg), base, copy.deepcopy(student), (digits, digits), seed=5)
    training = [x for x in Spy.seen if len(x) == 16]  # (student, teacher) per step; not the shape probes
    assert len(training) == 2 * 3
    assert report.steps == 3 and report.accuracy_before == pytest.approx(base_acc)
    for s, t in zip(training[0::2], training[1::2], strict=True):
        assert s.shape == (16, 1, 8, 8) and torch.equal(s, t)
        assert sum(r.numpy().tobytes() in raw for r in s) < len(s)  # augmented, not the raw rows


def test_a_text_model_distills_with_augmented_tokens():
    pytest.importorskip("transformers")
    from hf_tiny import tiny, toy_task

    model, task = tiny("bert"), toy_task(64)
    aug = A.Augmenter.for_model("text", model)
    assert aug.fill_id == model.tokenizer.unk_token_id and model.tokenizer.pad_token_id in aug.protect
    x = tl.tasks.for_model(task, model).x_train
    out, _ = aug(x)
    assert torch.equal(out[:, 1:], x[:, 1:]) and not torch.equal(out, x)
    loop = {"optimizer": "adam", "lr": 1e-3, "max_steps": 2, "batch_size": 16, "device": "cpu"}
    res = LOCKS.get("undo").from_config({"augment": "text", "seed": 1, "loop": loop}).apply(model, task)
    assert res.report.steps == 2
