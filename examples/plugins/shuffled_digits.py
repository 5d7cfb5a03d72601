"""An example plugin: a task of your own in one file.

    trainlock --plugin examples/plugins/shuffled_digits.py train --task shuffled-digits --model mlp --out runs/sd

`shuffled-digits` is scikit-learn's 8x8 digits with every image's pixels put through one fixed random
permutation (seed 7): the same labels and statistics as `digits`, none of its spatial structure. A task is
a function returning a `trainlock.tasks.Task` (x_train, y_train, x_test, y_test tensors, num_classes),
registered with `@register_task(NAME)`; it is called only when the task is used.
"""

from __future__ import annotations

import functools

from trainlock.tasks import Task, get, permuted, register_task


@register_task(
    "shuffled-digits", description="digits, pixels permuted (seed 7)", install_hint="pip install scikit-learn"
)
@functools.cache
def shuffled_digits() -> Task:
    return permuted(get("digits"), seed=7, name="shuffled-digits")
