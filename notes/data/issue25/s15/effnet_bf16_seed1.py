import sys, time, torch
torch.set_num_threads(1)
from trainlock import models, tasks
from trainlock.tasks import for_model
from trainlock.train import LoopConfig, evaluate, fit
from trainlock.paper.demo_effnet import AUTHORIZED, vision_plan
p = vision_plan(False)
task = tasks.get(AUTHORIZED).subset(p.n_train, p.n_test)
for seed in (1,):
    for precision in ("fp32", "bf16"):
        torch.manual_seed(seed)
        m = models.build("effnet-lite0", input_shape=task.input_shape, num_classes=task.num_classes, size=p.size)
        cfg = LoopConfig(optimizer="adam", lr=1e-3, epochs=1000, schedule="linear", max_steps=p.train_steps,
                         batch_size=p.batch_size, device="cpu", precision=precision, seed=seed)
        t = time.perf_counter(); fit(m, for_model(task, m), cfg, progress=False)
        print(seed, precision, round(evaluate(m, for_model(task, m)), 4), round(time.perf_counter() - t), flush=True)
