import math

import trainlock
from trainlock.attacks import FineTuneConfig
from trainlock.locks import specdef_loop
from trainlock.paper.prediction import prediction_study_demo, prediction_study_fig2
from trainlock.train import LoopConfig


def test_fig2_study_quick():
    rows = prediction_study_fig2(quick=True, archs=("mlp",))
    body, summary = rows[:-1], rows[-1]
    assert body and all(math.isfinite(r["predicted"]) and r["predicted"] > 0 for r in body)
    assert summary["summary"] and math.isfinite(summary["median_abs_log_ratio"])
    rho = summary["spearman"]
    assert math.isnan(rho) or -1.0 <= rho <= 1.0  # recorded, not asserted good (one row: nan)


def test_demo_study_tiny_digits(digits, digits_permuted, tiny_base):
    locked = trainlock.lock(
        tiny_base, trainlock.SpecDefConfig(loop=specdef_loop(lr=5.0, epochs=2, batch_size=32, device="cpu")), digits
    ).model
    out = prediction_study_demo(
        tiny_base,
        locked,
        digits_permuted,
        n=128,
        attack=FineTuneConfig(
            loop=LoopConfig(optimizer="adam", lr=1e-2, epochs=10_000, batch_size=32, max_steps=400, device="cpu"),
            target_accuracy=0.7,
            eval_every=10,
        ),
    )
    print(out)
    assert out["locked_lambda_max"] > 0 and out["base_lambda_max"] > 0
    assert out["base_steps"] is not None  # recorded: base 50, predicted ~61, measured 70 steps
    assert out["predicted"] == "diverges" or out["predicted"] > 0
    assert isinstance(out["agrees"], bool)
