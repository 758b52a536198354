#!/usr/bin/env python3
"""The PyTorch counterpart of d2l-regularization: both experiments, both versions.

The same hyper-parameters, initialisation, data pipeline (tensors preloaded on the device, an
on-device permutation per epoch, metric sums kept on the device) and the same sequence of
random operations as the Rust code, writing the same CSV files. With the same seed on the CPU
both sides compute the same numbers; only floating-point summation order may differ.

    python scripts/torch_counterpart.py --device cpu weight-decay
    python scripts/torch_counterpart.py --device cpu dropout --epochs 1
"""
import argparse
import contextlib
import csv
import gzip
import json
import math
import os
import struct
import sys
import time

# --reproducible: the CPU kernels the Rust binary's --reproducible fixes (src/cpu/mod.rs): MKL's
# COMPATIBLE branch, ATen's AVX2 kernels, two threads unless --threads says otherwise. Set before
# torch is imported: MKL and ATen read these once, at their first use.
REPRODUCIBLE_ENVIRONMENT = {"MKL_CBWR": "COMPATIBLE", "MKL_DYNAMIC": "FALSE", "ATEN_CPU_CAPABILITY": "avx2"}
REPRODUCIBLE_THREADS = 2
if "--reproducible" in sys.argv[1:]:
    os.environ.update(REPRODUCIBLE_ENVIRONMENT)

import torch  # noqa: E402 (after the environment above)
from torch import nn
import torch.nn.functional as F

BOOK_WD = dict(epochs=100, lr=0.003, batch_size=5, n_train=20, n_test=100, num_inputs=200)
BOOK_DROPOUT = dict(epochs=10, lr=0.5, batch_size=256, dropout1=0.2, dropout2=0.5)


# ------------------------------------------------------------------ shared pieces

def batches(X, y, batch_size, shuffle):
    """Mini-batches on the device: an on-device permutation, or in order; last batch kept."""
    n = X.shape[0]
    if shuffle:
        order = torch.randperm(n, device=X.device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield X.index_select(0, idx), y.index_select(0, idx)
    else:
        for i in range(0, n, batch_size):
            yield X[i:i + batch_size], y[i:i + batch_size]


def update(updater, l):
    """d2l's train_epoch_ch3 dispatch: an optimizer steps on the mean, the scratch sgd on the sum
    (told the batch's size, for a proximal step that scales with it)."""
    if hasattr(updater, "step"):
        updater.zero_grad()
        loss = l.mean() + updater.penalty() if hasattr(updater, "penalty") else l.mean()
        loss.backward()
        updater.step()
    else:
        l.sum().backward()
        updater(l.shape[0])


def soft_threshold(weights, t):
    """The proximal step of t·‖w‖₁: w ← sign(w)·max(|w| − t, 0)."""
    with torch.no_grad():
        for w in weights:
            w.copy_(torch.sign(w) * torch.clamp(w.abs() - t, min=0.0))


class ProxOptimizer:
    """An optimizer followed by soft-thresholding of `weights` by `t` after each step."""

    def __init__(self, opt, weights, t):
        self.opt, self.weights, self.t = opt, weights, t

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        self.opt.step()
        soft_threshold(self.weights, self.t)


def make_sgd(params, lr, batch_size):
    """The book's from-scratch minibatch SGD."""
    def sgd(n=None):
        with torch.no_grad():
            for param in params:
                param -= lr * param.grad / batch_size
                param.grad.zero_()
    return sgd


def tidy(v):
    """A number as the Rust binary writes it: a value that is exactly a 32-bit float, written
    with many digits, in the shortest text that reads back as that f32 (108.51725, not
    108.51725006103516); any other value as Python writes it."""
    if not isinstance(v, float) or not math.isfinite(v):
        return v
    text = repr(v)
    digits = len(text.split("e")[0].replace("-", "").replace(".", "").lstrip("0"))
    as_f32 = struct.unpack("f", struct.pack("f", v))[0]
    if digits <= 9 or as_f32 != v:
        return v
    for precision in range(1, 10):
        short = f"{v:.{precision}g}"
        if struct.unpack("f", struct.pack("f", float(short)))[0] == v:
            return short
    return v


def write_csv(path, header, rows):
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows([[tidy(v) for v in row] for row in rows])
    os.replace(tmp, path)


def write_json(path, value):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def fmt_num(v):
    """3.0 -> '3', 0.5 -> '0.5': as Rust prints an f64."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def round_derived(v):
    """A figure derived from two others, to 12 significant digits, as the Rust binary rounds it."""
    return v if v == 0 or not math.isfinite(v) else float(f"{v:.11e}")


class Board:
    """A run's TensorBoard event file, in the Rust binary's layout and tags
    (<out>/tensorboard/<experiment>/<run>-seed<k>/): every row's figures as scalars named as
    the CSV's columns at step `epoch`, flushed row by row; at the end the final figures as
    `final/<figure>` and the hyper-parameters through the HParams plugin (add_hparams' three
    summaries, written into the run's own directory as the Rust side does, where add_hparams
    would make a sub-run). --no-tensorboard: nothing."""

    def __init__(self, args, experiment, run):
        self.writer = None
        if not args.tensorboard:
            return
        from torch.utils.tensorboard import SummaryWriter
        self.seed = args.seed
        path = os.path.join(args.out, "tensorboard", experiment, f"{run}-seed{args.seed}")
        # A run written again replaces its event files (no step twice, as on the Rust side).
        for old in os.listdir(path) if os.path.isdir(path) else []:
            if "tfevents" in old:
                os.remove(os.path.join(path, old))
        self.writer = SummaryWriter(path)

    def row(self, header, row):
        if self.writer:
            for tag, v in zip(header[1:], row[1:]):
                self.writer.add_scalar(tag, v, row[0])
            self.writer.flush()

    def finish(self, hparams, finals, step):
        if not self.writer:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries
        metrics = {f"final/{k}": v for k, v in finals.items()}
        for tag, v in metrics.items():
            if math.isfinite(v):
                self.writer.add_scalar(tag, v, step)
        summaries = hparams_summaries(dict(hparams, seed=self.seed), metrics)
        for summary in summaries:
            self.writer.file_writer.add_summary(summary)
        self.writer.close()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ §4.5 weight decay

def synthetic_data(w, b, num_examples):
    X = torch.normal(0, 1, (num_examples, len(w)), device=w.device)
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape, device=w.device)
    return X, y.reshape((-1, 1))


def wd_data(cfg, device):
    true_w, true_b = torch.ones((cfg.num_inputs, 1), device=device) * 0.01, 0.05
    return synthetic_data(true_w, true_b, cfg.n_train), synthetic_data(true_w, true_b, cfg.n_test)


def l2_penalty(w):
    return torch.sum(w.pow(2)) / 2


def l1_penalty(w):
    return torch.sum(torch.abs(w))


PENALTIES = {"l2": l2_penalty, "l1": l1_penalty}


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def wd_train(cfg, data, net, train_loss, eval_loss, updater):
    (Xtr, ytr), (Xte, yte) = data
    losses, elapsed, start = [], [], time.perf_counter()
    for _ in range(cfg.epochs):
        for X, y in batches(Xtr, ytr, cfg.batch_size, shuffle=True):
            update(updater, train_loss(net(X), y))
        with torch.no_grad():
            losses.append(eval_loss(net(Xtr), ytr).mean())
            losses.append(eval_loss(net(Xte), yte).mean())
        elapsed.append(time.perf_counter() - start)
    losses = torch.stack(losses).double().tolist()
    return [(i + 1, losses[2 * i], losses[2 * i + 1], elapsed[i]) for i in range(cfg.epochs)]


def wd_scratch(cfg, setting, data, device):
    """The book's scratch version; --penalty l1 puts λ‖w‖₁ where λ‖w‖²/2 was."""
    w = torch.normal(0, 1, size=(cfg.num_inputs, 1), device=device, requires_grad=True)
    b = torch.zeros(1, device=device, requires_grad=True)
    net = lambda X: torch.matmul(X, w) + b
    lambd, sgd = setting["wd"], make_sgd([w, b], cfg.lr, cfg.batch_size)
    if setting["penalty"] == "l1-prox":
        loss = squared_loss

        def updater(n):
            sgd(n)
            soft_threshold([w], cfg.lr * lambd * n / cfg.batch_size)
    else:
        penalty, updater = PENALTIES[setting["penalty"]], sgd
        loss = lambda y_hat, y: squared_loss(y_hat, y) + penalty(w) * lambd
    curve = wd_train(cfg, data, net, loss, squared_loss, updater)
    return curve, w


class LibtorchAdam(torch.optim.Optimizer):
    """libtorch's C++ Adam and AdamW (torch/csrc/api/src/optim/adam.cpp, adamw.cpp), the ones tch
    runs, written out op by op. PyTorch's Python Adam computes the same formulas rounded
    differently (the first moment by `lerp_`, the bias correction by `** 0.5`); with this one
    (`--adam-rule libtorch`) the counterpart takes tch's steps exactly."""

    def __init__(self, params, lr, decoupled, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=0.0))
        self.decoupled = decoupled

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if self.decoupled and wd != 0:
                    p.mul_(1 - lr * wd)
                state["step"] += 1
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                if not self.decoupled and wd != 0:
                    grad = grad.add(p, alpha=wd)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
LIBTORCH_OPTIMIZERS = {"sgd": torch.optim.SGD,
                       "adam": lambda groups, lr: LibtorchAdam(groups, lr, decoupled=False),
                       "adamw": lambda groups, lr: LibtorchAdam(groups, lr, decoupled=True)}


def wd_concise(cfg, setting, data, device):
    """The book's concise version: the weight in a parameter group that decays, the bias in one
    that does not (weight_decay=0 explicitly: AdamW's default is 0.01). With --penalty l1 the
    optimizer does not decay; λ‖w‖₁ is added to the loss (no optimizer has L1)."""
    net = nn.Sequential(nn.Linear(cfg.num_inputs, 1)).to(device)
    for param in net.parameters():
        param.data.normal_()
    mse = nn.MSELoss(reduction="none")
    wd = setting["wd"] if setting["penalty"] == "l2" else 0.0
    optimizers = LIBTORCH_OPTIMIZERS if cfg.adam_rule == "libtorch" else OPTIMIZERS
    trainer = optimizers[setting["optimizer"]]([
        {"params": net[0].weight, "weight_decay": wd},
        {"params": net[0].bias, "weight_decay": 0.0}], lr=cfg.lr)
    if setting["penalty"] == "l1":
        loss = lambda y_hat, y: mse(y_hat, y) + l1_penalty(net[0].weight) * setting["wd"]
    else:
        loss = mse
    if setting["penalty"] == "l1-prox":
        trainer = ProxOptimizer(trainer, [net[0].weight], cfg.lr * setting["wd"])
    curve = wd_train(cfg, data, net, loss, mse, trainer)
    return curve, net[0].weight


def wd_run(cfg, impl, setting, seed, device):
    """One freshly seeded run: data, model, training; returns (curve, weight figures, seconds)
    with the weight's figures as the Rust binary computes them: ‖w‖₂ (in the weight's type),
    ‖w‖₁ and the fraction of |wᵢ| < 1e-4 (in float64)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    train = wd_scratch if impl == "scratch" else wd_concise
    data = wd_data(cfg, device)
    with autocast_region(cfg, device):
        curve, w = train(cfg, setting, data, device)
    with torch.no_grad():
        w_abs = w.detach().flatten().double().abs()
        figures = dict(w_norm=w.norm().item(), w_l1=w_abs.sum().item(), w_small=(w_abs < 1e-4).double().mean().item())
    return curve, figures, time.perf_counter() - start


def variant(setting):
    """What differs from the book's (SGD, L2), as the Rust binary names it."""
    return [v for v, book in ((setting["optimizer"], "sgd"), (setting["penalty"], "l2")) if v != book]


def wd_settings(cfg, impl):
    """Penalty by penalty, optimizer by optimizer, every λ; scratch has the book's SGD only."""
    optimizers = ["sgd"] if impl == "scratch" else cfg.optimizer
    return [dict(optimizer=o, penalty=p, wd=wd) for p in cfg.penalty for o in optimizers for wd in cfg.wd]


def weight_decay(cfg, impl_choice, args, device):
    out = os.path.join(args.out, "weight-decay")
    os.makedirs(out, exist_ok=True)
    summary = []
    for impl in impls(impl_choice):
        for setting in wd_settings(cfg, impl):
            stem = "-".join([impl] + variant(setting)) + f"-wd{fmt_num(setting['wd'])}"
            board = Board(args, "weight-decay", stem)
            curve, figures, seconds = wd_run(cfg, impl, setting, args.seed, device)
            w_norm = figures["w_norm"]
            name = " ".join([impl] + variant(setting))
            print(f"weight decay, {name} λ={fmt_num(setting['wd'])}: L2 norm of w: {w_norm:.6f}")
            header = ["epoch", "train_loss", "test_loss", "elapsed_s"]
            write_csv(f"{out}/{stem}.csv", header, curve)
            for row in curve:
                board.row(header, row)
            last = curve[-1]
            finals = dict(figures, train_loss=last[1], test_loss=last[2], gap=round_derived(last[2] - last[1]))
            hparams = dict(impl=impl, engine="autograd", precision=cfg.precision, **setting,
                           **{k: getattr(cfg, k) for k in BOOK_WD})
            board.finish(hparams, finals, last[0])
            summary.append((impl, setting["optimizer"], setting["penalty"], setting["wd"], w_norm,
                            curve[-1][1], curve[-1][2], seconds))
    write_csv(f"{out}/summary.csv", ["impl", "optimizer", "penalty", "wd", "w_norm", "final_train_loss",
                                     "final_test_loss", "seconds"], summary)
    write_json(f"{out}/run.json", run_info("weight-decay", cfg, args, device))
    return summary


def impls(choice):
    return ["scratch", "concise"] if choice == "both" else [choice]


def run_info(experiment, cfg, args, device):
    return {
        "experiment": experiment, "config": vars(cfg), "seed": args.seed,
        "device_requested": args.device, "device": str(device),
        "threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "command": sys.argv, "finished_unix": int(time.time()),
    }


# ------------------------------------------------------------------ §4.6 dropout

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def find_data_dir(explicit):
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "d2l-regularization", "fashion-mnist")
    for d in [explicit, os.environ.get("FASHION_MNIST_DIR"), "/usr/share/datasets/fashion-mnist", cache]:
        if d and all(os.path.exists(os.path.join(d, f + ".gz")) or os.path.exists(os.path.join(d, f))
                     for f in FILES):
            return d
    sys.exit("error: Fashion-MNIST not found; run the Rust binary once (it downloads it) or pass --data-dir")


def read_idx(path):
    if not os.path.exists(path):
        path = path[:-3] if path.endswith(".gz") else path + ".gz"
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_fashion_mnist(data_dir, device):
    """Both splits moved to the device once: images f32 in [0, 1] as [N, 784] (ToTensor's /255)."""
    def split(images, labels):
        X = read_idx(os.path.join(data_dir, images + ".gz")).to(device)
        y = read_idx(os.path.join(data_dir, labels + ".gz")).to(device)
        return X.reshape(-1, 784).float() / 255.0, y.long()
    return split(FILES[0], FILES[1]), split(FILES[2], FILES[3])


def dropout_layer(X, dropout):
    assert 0 <= dropout <= 1
    if dropout == 1:
        return torch.zeros_like(X)
    if dropout == 0:
        return X
    mask = (torch.rand(X.shape, device=X.device) > dropout).float()
    return mask * X / (1.0 - dropout)


def gaussian_noise(H, p):
    """H multiplied by N(1, p/(1−p)) noise: dropout's mean and variance (Srivastava et al.)."""
    if p == 0:
        return H
    return H * (torch.randn_like(H) * math.sqrt(p / (1.0 - p)) + 1.0)


class Noise:
    """The training noise of the exercises, drawn as the Rust binary draws it: `bernoulli`
    (dropout), `gaussian`, `dropconnect` (on the following layer's weights), and input noise σ."""

    def __init__(self, kind, rates, input_sigma):
        self.kind, self.rates, self.input_sigma = kind, rates, input_sigma

    def input(self, X, training):
        return X + torch.randn_like(X) * self.input_sigma if training and self.input_sigma > 0 else X

    def activations(self, H, k, training):
        if training and self.kind == "bernoulli":
            return dropout_layer(H, self.rates[k])
        if training and self.kind == "gaussian":
            return gaussian_noise(H, self.rates[k])
        return H

    def weight(self, W, k, training):
        return dropout_layer(W, self.rates[k]) if training and self.kind == "dropconnect" else W


class Net(nn.Module):
    def __init__(self, num_inputs, num_outputs, num_hiddens1, num_hiddens2, dropout1, dropout2, device,
                 noise=None):
        super().__init__()
        self.num_inputs, self.dropout1, self.dropout2 = num_inputs, dropout1, dropout2
        self.noise = noise or Noise("bernoulli", (dropout1, dropout2), 0.0)
        self.lin1 = nn.Linear(num_inputs, num_hiddens1, device=device)
        self.lin2 = nn.Linear(num_hiddens1, num_hiddens2, device=device)
        self.lin3 = nn.Linear(num_hiddens2, num_outputs, device=device)
        self.relu = nn.ReLU()

    def forward(self, X):
        noise, t = self.noise, self.training
        H1 = self.relu(self.lin1(noise.input(X.reshape((-1, self.num_inputs)), t)))
        H1 = noise.activations(H1, 0, t)
        H2 = self.relu(F.linear(H1, noise.weight(self.lin2.weight, 0, t), self.lin2.bias))
        H2 = noise.activations(H2, 1, t)
        return F.linear(H2, noise.weight(self.lin3.weight, 1, t), self.lin3.bias)


class ConciseNoisy(nn.Module):
    """The concise model with another noise than nn.Dropout: the same layers, in the same order."""

    def __init__(self, noise, device):
        super().__init__()
        self.noise = noise
        self.layers = nn.ModuleList([nn.Linear(784, 256, device=device), nn.Linear(256, 256, device=device),
                                     nn.Linear(256, 10, device=device)])

    def forward(self, X):
        noise, t, (l1, l2, l3) = self.noise, self.training, self.layers
        H1 = noise.activations(torch.relu(l1(noise.input(X.flatten(1), t))), 0, t)
        H2 = noise.activations(torch.relu(F.linear(H1, noise.weight(l2.weight, 0, t), l2.bias)), 1, t)
        return F.linear(H2, noise.weight(l3.weight, 1, t), l3.bias)


def concise_net(dropout1, dropout2, device, noise=None):
    if noise is None or (noise.kind == "bernoulli" and noise.input_sigma == 0):
        net = nn.Sequential(nn.Flatten(),
                            nn.Linear(784, 256, device=device), nn.ReLU(), nn.Dropout(dropout1),
                            nn.Linear(256, 256, device=device), nn.ReLU(), nn.Dropout(dropout2),
                            nn.Linear(256, 10, device=device))
    else:
        net = ConciseNoisy(noise, device)

    def init_weights(m):
        if type(m) == nn.Linear:
            nn.init.normal_(m.weight, std=0.01)
    net.apply(init_weights)
    return net


class PenalizedSGD:
    """torch.optim.SGD on the mean loss plus λ·Σ‖W‖²/2 (the scratch version's weight decay)."""

    def __init__(self, params, weights, lr, lambd):
        self.opt, self.weights, self.lambd = torch.optim.SGD(params, lr=lr), weights, lambd

    def zero_grad(self):
        self.opt.zero_grad()

    def penalty(self):
        return sum((w.pow(2).sum() / 2 for w in self.weights), torch.zeros(())) * self.lambd

    def step(self):
        self.opt.step()


def dropout_learner(cfg, impl, device):
    """The model of either version and SGD: concise decays its weights through a parameter group
    (`--wd`), scratch adds the L2 term on its weights to the loss."""
    noise = Noise(getattr(cfg, "noise", "bernoulli"), (cfg.dropout1, cfg.dropout2),
                  getattr(cfg, "input_noise", 0.0))
    wd = getattr(cfg, "wd", 0.0)
    if impl == "scratch":
        net = Net(784, 10, 256, 256, cfg.dropout1, cfg.dropout2, device, noise)
        weights = [net.lin1.weight, net.lin2.weight, net.lin3.weight]
        if wd > 0:
            return net, PenalizedSGD(net.parameters(), weights, cfg.lr, wd)
        return net, torch.optim.SGD(net.parameters(), lr=cfg.lr)
    net = concise_net(cfg.dropout1, cfg.dropout2, device, noise)
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    return net, torch.optim.SGD([{"params": weights, "weight_decay": wd},
                                 {"params": biases, "weight_decay": 0.0}], lr=cfg.lr)


LOSS = nn.CrossEntropyLoss(reduction="none")


class Autocasted(nn.Module):
    """--precision bf16-mixed: the model's forward under torch.autocast (bf16), its logits back
    in float32 for a float32 loss; weights, gradients and SGD stay float32 (the Rust binary's
    precision::Autocasted)."""
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, X):
        with torch.autocast(X.device.type, dtype=torch.bfloat16):
            return self.inner(X).float()


def autocast_region(cfg, device):
    """--precision bf16-mixed for a whole training (weight decay): torch.autocast without its
    weight cache (the weights change in place inside the region), as the Rust binary does."""
    if getattr(cfg, "precision", "f32") == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def train_epoch(net, trainer, batch_iter, device):
    """One training epoch with dropout on; the sums stay on the device."""
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for X, y in batch_iter:
        y_hat = net(X)
        l = LOSS(y_hat, y)
        update(trainer, l)
        loss_sum += l.detach().sum(dtype=torch.float64)
        correct += (y_hat.argmax(1) == y).sum()
    return loss_sum, correct


def count_correct(net, batch_iter, device):
    """Correct predictions with dropout off, without gradients (an on-device scalar)."""
    net.eval()
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.int64, device=device)
        for X, y in batch_iter:
            total += (net(X).argmax(1) == y).sum()
    return total


def dropout_train(cfg, impl, data, device, log=None):
    """The book's train_ch3 with the data on the device and the sums kept there."""
    (Xtr, ytr), (Xte, yte) = data
    net, trainer = dropout_learner(cfg, impl, device)
    if getattr(cfg, "precision", "f32") == "bf16-mixed":
        net = Autocasted(net)
    curve = []
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        loss_sum, correct = train_epoch(net, trainer, batches(Xtr, ytr, cfg.batch_size, True), device)
        test_correct = count_correct(net, batches(Xte, yte, cfg.batch_size, False), device)
        loss_sum, correct, test_correct = torch.stack(
            [loss_sum, correct.double(), test_correct.double()]).tolist()
        n = Xtr.shape[0]
        row = (epoch, loss_sum / n, correct / n, test_correct / Xte.shape[0], time.perf_counter() - start)
        if log:
            log(row)
        curve.append(row)
    return curve, net


def dropout(cfg, impl_choice, args, device):
    out = os.path.join(args.out, "dropout")
    os.makedirs(out, exist_ok=True)
    data = load_fashion_mnist(find_data_dir(cfg.data_dir), device)
    summary = []
    header = ["epoch", "train_loss", "train_acc", "test_acc", "seconds", "elapsed_s"]
    for impl in impls(impl_choice):
        torch.manual_seed(args.seed)
        noise = f"-{cfg.noise}" if cfg.noise != "bernoulli" else ""
        wd = f"-wd{fmt_num(cfg.wd)}" if cfg.wd > 0 else ""
        # The Rust binary's run name: the rates in it, as a sweep names its runs.
        board = Board(args, "dropout", f"{impl}{noise}-p{fmt_num(cfg.dropout1)}-{fmt_num(cfg.dropout2)}{wd}")
        rows = []  # each epoch's row with the seconds since the run started (elapsed_s)

        def log(r):
            print(f"dropout, {impl} epoch {r[0]}/{cfg.epochs}: train loss {r[1]:.4f}, "
                  f"train acc {r[2]:.4f}, test acc {r[3]:.4f} ({r[4]:.2f} s)", file=sys.stderr)
            rows.append(r + ((rows[-1][-1] if rows else 0) + r[4],))
            board.row(header, rows[-1])
        curve, _ = dropout_train(cfg, impl, data, device, log)
        last = curve[-1]
        print(f"dropout, {impl}: loss {last[1]:.3f}, train acc {last[2]:.3f}, test acc {last[3]:.3f}")
        write_csv(f"{out}/{impl}{noise}{wd}.csv", header, rows)
        finals = dict(train_loss=last[1], train_acc=last[2], test_acc=last[3], gap=round_derived(last[2] - last[3]))
        hparams = dict(impl=impl, engine="autograd", noise=cfg.noise, wd=cfg.wd, input_noise=cfg.input_noise,
                       track_activations=False, precision=cfg.precision, **{k: getattr(cfg, k) for k in BOOK_DROPOUT})
        board.finish(hparams, finals, last[0])
        summary.append((impl, last[1], last[2], last[3], sum(r[4] for r in curve)))
    write_csv(f"{out}/summary.csv",
              ["impl", "final_train_loss", "final_train_acc", "final_test_acc", "seconds"], summary)
    write_json(f"{out}/run.json", run_info("dropout", cfg, args, device))
    return summary


# ------------------------------------------------------------------ benchmark

def book_loaders(data_dir, batch_size):
    """The book's loader: torchvision FashionMNIST + ToTensor + a 4-worker DataLoader.

    torchvision wants the uncompressed files under <root>/FashionMNIST/raw; they are
    decompressed once into the cache."""
    import torchvision
    from torch.utils import data
    from torchvision import transforms
    root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                        "d2l-regularization", "torchvision")
    raw = os.path.join(root, "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for f in FILES:
        if not os.path.exists(os.path.join(raw, f)):
            src = os.path.join(data_dir, f + ".gz")
            opener = gzip.open if os.path.exists(src) else open
            with opener(src if os.path.exists(src) else os.path.join(data_dir, f), "rb") as i, \
                    open(os.path.join(raw, f + ".tmp"), "wb") as o:
                o.write(i.read())
            os.replace(os.path.join(raw, f + ".tmp"), os.path.join(raw, f))
    trans = transforms.ToTensor()
    train = torchvision.datasets.FashionMNIST(root=root, train=True, transform=trans, download=False)
    test = torchvision.datasets.FashionMNIST(root=root, train=False, transform=trans, download=False)
    return (data.DataLoader(train, batch_size, shuffle=True, num_workers=4),
            data.DataLoader(test, batch_size, shuffle=False, num_workers=4))


class GraphedTraining:
    """The strongest hand-written PyTorch anchor: every training step (forward, loss, backward,
    SGD, the on-device sums) captured once as a CUDA graph per batch size (the last batch of an
    epoch is partial) with static inputs, after the usual warm-up on a side stream, then replayed
    (PyTorch's whole-network recipe, torch.cuda.graphs). Per step the host only gathers the batch
    into the static inputs and launches the graph."""

    WARMUP_STEPS = 3

    def __init__(self, net, trainer, X, y, batch_size, device):
        self.net, self.trainer, self.batch_size = net, trainer, batch_size
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.graphs, self.pool = {}, None
        n = X.shape[0]
        for rows in sorted({batch_size, n % batch_size} - {0}, reverse=True):
            self.graphs[rows] = self._capture(X[:rows].clone(), y[:rows].clone())

    def _step(self, X, y):
        y_hat = self.net(X)
        l = LOSS(y_hat, y)
        l.mean().backward()
        self.trainer.step()
        self.loss_sum += l.detach().sum(dtype=torch.float64)
        self.correct += (y_hat.argmax(1) == y).sum()

    def _capture(self, X, y):
        self.net.train()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_STEPS):
                self.trainer.zero_grad(set_to_none=True)
                self._step(X, y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.trainer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, pool=self.pool):
            self._step(X, y)
        self.pool = graph.pool()
        return graph, X, y

    def train_epoch(self, X, y):
        n = X.shape[0]
        order = torch.randperm(n, device=X.device)
        self.loss_sum.zero_()
        self.correct.zero_()
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            graph, static_X, static_y = self.graphs[idx.shape[0]]
            torch.index_select(X, 0, idx, out=static_X)
            torch.index_select(y, 0, idx, out=static_y)
            graph.replay()
        return self.loss_sum, self.correct


def bench(args, device):
    """One process's timings as JSON (the same keys as the Rust binary's `bench`).

    --mode picks how PyTorch runs the dropout training epoch: `eager` (the counterpart as it
    is), `compile` (the model under torch.compile(mode="reduce-overhead"), which captures CUDA
    graphs on a GPU), or `graph` (GraphedTraining: the whole step captured by hand; CUDA only).
    The first epoch (compilation, capture) is not timed."""
    side = "torch" if args.loader == "preloaded" else "torch-book-loader"
    if args.mode != "eager":
        side = f"torch-{args.mode}"
    out = {"side": side, "mode": args.mode, "precision": args.precision,
           "device": str(device), "threads": torch.get_num_threads(), "torch_version": torch.__version__,
           "dropout_train_s": [], "dropout_test_s": [], "wd_scratch_s": [], "wd_concise_s": []}
    if args.mode == "graph" and device.type != "cuda":
        sys.exit("error: bench --mode graph needs --device cuda (CUDA graphs)")
    if args.mode != "eager" and args.loader != "preloaded":
        sys.exit("error: bench --mode compile|graph runs with the preloaded data only")
    if args.loader == "preloaded" and args.mode == "eager":
        wd = argparse.Namespace(**BOOK_WD, wd=[3.0], adam_rule="torch", precision=args.precision)
        for _ in range(args.wd_runs):
            for impl in ("scratch", "concise"):
                out[f"wd_{impl}_s"].append(wd_run(wd, impl, dict(optimizer="sgd", penalty="l2", wd=3.0), args.seed, device)[2])
    cfg = argparse.Namespace(**BOOK_DROPOUT)
    data_dir = find_data_dir(args.data_dir)
    if args.loader == "preloaded":
        (Xtr, ytr), (Xte, yte) = load_fashion_mnist(data_dir, device)
        train_iter = lambda: batches(Xtr, ytr, cfg.batch_size, True)
        test_iter = lambda: batches(Xte, yte, cfg.batch_size, False)
    else:
        train_loader, test_loader = book_loaders(data_dir, cfg.batch_size)
        train_iter = lambda: ((X.to(device), y.to(device)) for X, y in train_loader)
        test_iter = lambda: ((X.to(device), y.to(device)) for X, y in test_loader)
    torch.manual_seed(args.seed)
    net, trainer = dropout_learner(cfg, "concise", device)
    if args.precision == "bf16-mixed":
        net = Autocasted(net)
    if args.mode == "compile":
        net = torch.compile(net, mode="reduce-overhead")
    graphed = None
    for epoch in range(args.epochs + 1):
        start = time.perf_counter()
        if args.mode == "graph":
            if graphed is None:
                graphed = GraphedTraining(net, trainer, Xtr, ytr, cfg.batch_size, device)
            loss_sum, _ = graphed.train_epoch(Xtr, ytr)
        else:
            loss_sum, _ = train_epoch(net, trainer, train_iter(), device)
        loss_sum.item()
        trained = time.perf_counter()
        count_correct(net, test_iter(), device).item()
        if epoch > 0:
            out["dropout_train_s"].append(trained - start)
            out["dropout_test_s"].append(time.perf_counter() - trained)
    print(json.dumps(out))


# ------------------------------------------------------------------ command line

def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {name}: no usable CUDA GPU")
    return device


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs-torch")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="no TensorBoard event files (<out>/tensorboard/, as the Rust binary writes them)")
    p.add_argument("--reproducible", action="store_true",
                   help="CPU: MKL's COMPATIBLE branch, ATen's AVX2 kernels, 2 threads (as the Rust flag)")
    sub = p.add_subparsers(dest="experiment")
    wd = sub.add_parser("weight-decay")
    wd.add_argument("--wd", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 3.0])
    wd.add_argument("--penalty", type=lambda s: s.split(","), default=["l2"], help="l2, l1, l1-prox (comma-separated)")
    wd.add_argument("--optimizer", type=lambda s: s.split(","), default=["sgd"],
                    help="sgd, adam, adamw (comma-separated; the concise version)")
    wd.add_argument("--adam-rule", choices=["torch", "libtorch"], default="torch",
                    help="torch: torch.optim.Adam/AdamW (the book's); libtorch: the C++ rule tch runs, "
                         "op by op (the same steps as the Rust binary, to the bit)")
    for k, v in BOOK_WD.items():
        wd.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    dr = sub.add_parser("dropout")
    for k, v in BOOK_DROPOUT.items():
        dr.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    dr.add_argument("--data-dir")
    dr.add_argument("--wd", type=float, default=0.0, help="weight decay on the weights")
    dr.add_argument("--noise", choices=["bernoulli", "gaussian", "dropconnect"], default="bernoulli")
    dr.add_argument("--input-noise", type=float, default=0.0, help="σ of N(0, σ²) added to the inputs")
    be = sub.add_parser("bench", help="timings for scripts/bench.sh, as JSON")
    be.add_argument("--epochs", type=int, default=2, help="timed dropout epochs after one warm-up")
    be.add_argument("--wd-runs", type=int, default=3)
    be.add_argument("--loader", choices=["preloaded", "book"], default="preloaded")
    be.add_argument("--mode", choices=["eager", "compile", "graph"], default="eager",
                    help="eager; compile: torch.compile(mode='reduce-overhead'); graph: whole step as a CUDA graph")
    be.add_argument("--data-dir")
    be.add_argument("--precision", choices=["f32", "bf16-mixed"], default="f32",
                    help="bf16-mixed: the dropout model's forward under torch.autocast")
    for sp in (wd, dr):
        sp.add_argument("--impl", choices=["concise", "scratch", "both"], default="both")
        sp.add_argument("--precision", choices=["f32", "bf16-mixed"], default="f32",
                        help="bf16-mixed: the forward's matrix products in bf16 (torch.autocast), float32 "
                             "weights, loss and SGD")
    args = p.parse_args(argv)
    if args.reproducible and os.environ.get("MKL_CBWR") != REPRODUCIBLE_ENVIRONMENT["MKL_CBWR"]:
        sys.exit("error: --reproducible must be on the command line (it is read before torch is imported)")
    threads = args.threads or (REPRODUCIBLE_THREADS if args.reproducible else None)
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(args.device)
    if args.experiment == "bench":
        return bench(args, device)
    if args.experiment in (None, "weight-decay"):
        cfg = args if args.experiment else wd.parse_args([])
        weight_decay(cfg_of(cfg, BOOK_WD, wd=cfg.wd, penalty=cfg.penalty, optimizer=cfg.optimizer,
                            adam_rule=cfg.adam_rule, precision=cfg.precision),
                     cfg.impl, args, device)
    if args.experiment in (None, "dropout"):
        cfg = args if args.experiment else dr.parse_args([])
        extra = dict(wd=cfg.wd, noise=cfg.noise, input_noise=cfg.input_noise, precision=cfg.precision)
        dropout(cfg_of(cfg, BOOK_DROPOUT, data_dir=cfg.data_dir, **extra), cfg.impl, args, device)


def cfg_of(ns, book, **extra):
    return argparse.Namespace(**{k: getattr(ns, k) for k in book}, **extra)


if __name__ == "__main__":
    main()
