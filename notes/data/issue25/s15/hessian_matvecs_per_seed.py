import torch, copy, warnings
import torch.nn.functional as F
import trainlock as tl
from trainlock.linalg.curvature import LanczosOptions, hessian_spectrum
torch.manual_seed(0)
model = tl.models.build("cnn", input_shape=[1, 28, 28], num_classes=10).eval()
batch = (torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,)))
lf = lambda m, b: F.cross_entropy(m(b[0]), b[1])
ref = hessian_spectrum(copy.deepcopy(model).double(), lf, (batch[0].double(), batch[1]), 1, options=LanczosOptions(tol=1e-10, iters=200))
truth = float(ref.eigenvalues[0])
from pyhessian import hessian as PH
def first(fn):
    for it in range(2, 60):
        if abs(fn(it)-truth) <= 1e-3*truth: return it
for s in range(6):
    lz = first(lambda it: float(hessian_spectrum(model, lf, batch, 1, options=LanczosOptions(tol=0, iters=it, warn=False, seed=s)).eigenvalues[0]))
    def ph(it):
        torch.manual_seed(s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = PH(model, torch.nn.CrossEntropyLoss(), data=batch, cuda=False)
            lam = h.eigenvalues(maxIter=it, tol=0, top_n=1)[0][0]
        model.zero_grad(set_to_none=True); return lam
    print(s, "lanczos iters to 1e-3:", lz, "pyhessian:", first(ph), flush=True)
