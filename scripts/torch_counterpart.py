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
import csv
import gzip
import json
import os
import struct
import sys
import time

import torch
from torch import nn

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
    """d2l's train_epoch_ch3 dispatch: an optimizer steps on the mean, the scratch sgd on the sum."""
    if isinstance(updater, torch.optim.Optimizer):
        updater.zero_grad()
        l.mean().backward()
        updater.step()
    else:
        l.sum().backward()
        updater()


def make_sgd(params, lr, batch_size):
    """The book's from-scratch minibatch SGD."""
    def sgd():
        with torch.no_grad():
            for param in params:
                param -= lr * param.grad / batch_size
                param.grad.zero_()
    return sgd


def write_csv(path, header, rows):
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
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


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def wd_train(cfg, data, net, train_loss, eval_loss, updater):
    (Xtr, ytr), (Xte, yte) = data
    losses = []
    for _ in range(cfg.epochs):
        for X, y in batches(Xtr, ytr, cfg.batch_size, shuffle=True):
            update(updater, train_loss(net(X), y))
        with torch.no_grad():
            losses.append(eval_loss(net(Xtr), ytr).mean())
            losses.append(eval_loss(net(Xte), yte).mean())
    losses = torch.stack(losses).double().tolist()
    return [(i + 1, losses[2 * i], losses[2 * i + 1]) for i in range(cfg.epochs)]


def wd_scratch(cfg, lambd, data, device):
    w = torch.normal(0, 1, size=(cfg.num_inputs, 1), device=device, requires_grad=True)
    b = torch.zeros(1, device=device, requires_grad=True)
    net = lambda X: torch.matmul(X, w) + b
    loss = lambda y_hat, y: squared_loss(y_hat, y) + l2_penalty(w) * lambd
    curve = wd_train(cfg, data, net, loss, squared_loss, make_sgd([w, b], cfg.lr, cfg.batch_size))
    return curve, torch.norm(w).item()


def wd_concise(cfg, wd, data, device):
    net = nn.Sequential(nn.Linear(cfg.num_inputs, 1)).to(device)
    for param in net.parameters():
        param.data.normal_()
    loss = nn.MSELoss(reduction="none")
    trainer = torch.optim.SGD([
        {"params": net[0].weight, "weight_decay": wd},
        {"params": net[0].bias}], lr=cfg.lr)
    curve = wd_train(cfg, data, net, loss, loss, trainer)
    return curve, net[0].weight.norm().item()


def weight_decay(cfg, args, device):
    out = os.path.join(args.out, "weight-decay")
    os.makedirs(out, exist_ok=True)
    summary = []
    for impl in impls(args.impl):
        for wd in cfg.wd:
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            data = wd_data(cfg, device)
            train = wd_scratch if impl == "scratch" else wd_concise
            curve, w_norm = train(cfg, wd, data, device)
            seconds = time.perf_counter() - start
            print(f"weight decay, {impl} λ={fmt_num(wd)}: L2 norm of w: {w_norm:.6f}")
            write_csv(f"{out}/{impl}-wd{fmt_num(wd)}.csv", ["epoch", "train_loss", "test_loss"], curve)
            summary.append((impl, wd, w_norm, curve[-1][1], curve[-1][2], seconds))
    write_csv(f"{out}/summary.csv",
              ["impl", "wd", "w_norm", "final_train_loss", "final_test_loss", "seconds"], summary)
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
