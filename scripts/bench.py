#!/usr/bin/env python3
"""Side-by-side benchmark: the Rust binary against the PyTorch counterpart, interleaved.

Each round runs, one process after the other: Rust (its autograd engine, then its fused engine,
on a GPU with CUDA graphs and without), PyTorch with the data preloaded on the device (eager),
the PyTorch anchors (on a GPU by default: the model under torch.compile(mode="reduce-overhead"),
and the whole training step captured by hand as a CUDA graph), PyTorch with the book's own loader
(torchvision + ToTensor + a 4-worker DataLoader), then the whole default weight-decay command of
each side (Rust autograd, Rust fused, PyTorch). All on one device with the same intra-op thread
count. Prints a markdown table of medians with ratios, the libtorch operators per training step
of each Rust engine, and writes results/bench/<device>.csv.

Usually run through scripts/bench.sh, which finds the binary and the venv.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
COUNTERPART = os.path.join(HERE, "torch_counterpart.py")

ROWS = [
    ("dropout_train_s", "dropout (concise): train epoch"),
    ("dropout_test_s", "dropout (concise): test pass"),
    ("wd_scratch_s", "weight decay, scratch: 100-epoch run"),
    ("wd_concise_s", "weight decay, concise: 100-epoch run"),
    ("process_s", "whole process: default weight-decay command"),
]


class Failed(Exception):
    """A measured command failed or ran out of the budget: reported, the benchmark goes on."""


# The deadline of --budget (time.monotonic()), or None: every command is cut off by it.
DEADLINE = None


def remaining():
    return None if DEADLINE is None else DEADLINE - time.monotonic()


def run_cmd(cmd, env):
    left = remaining()
    if left is not None and left < 1:
        raise Failed(f"{' '.join(cmd[:3])} …: not started, the budget is spent")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=left)
    except subprocess.TimeoutExpired:
        raise Failed(f"{' '.join(cmd)}: stopped at the end of the budget ({left:.0f} s left when it started)")
    if p.returncode != 0:
        raise Failed(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return p


def run_json(cmd, env):
    return json.loads(run_cmd(cmd, env).stdout.strip().splitlines()[-1])


def timed(cmd, env):
    start = time.perf_counter()
    run_cmd(cmd, env)
    return time.perf_counter() - start


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    global DEADLINE
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True, help="the release binary")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3, help="at most this many rounds (fewer when --budget runs out)")
    p.add_argument("--epochs", type=int, default=2, help="timed dropout epochs per process")
    p.add_argument("--wd-runs", type=int, default=3, help="timed weight-decay runs per process")
    p.add_argument("--data-dir")
    p.add_argument("--no-book-loader", action="store_true", help="skip the torchvision loader column")
    p.add_argument("--anchors", default=None,
                   help="comma-separated PyTorch anchors for the dropout epoch: compile, graph "
                        "(default: both on a GPU, none on the CPU; 'none' for none)")
    p.add_argument("--out", default=os.path.join(REPO, "results", "bench"),
                   help="the directory of <device>.csv, the medians (rewritten after every measurement)")
    p.add_argument("--samples", help="also append every measurement to this CSV as it is taken (flushed row "
                                     "by row: a benchmark cut off keeps what it measured)")
    p.add_argument("--table", help="also write the markdown table to this file (rewritten after every round)")
    p.add_argument("--budget", type=float,
                   help="seconds: no round starts that the longest round so far says would not end in "
                        "time, and every command is stopped at the end")
    p.add_argument("--runs", help="keep the whole-command runs here (rust/, rust-fused/, torch/; each round "
                                  "replaces the last), to compare them in TensorBoard: tensorboard --logdir RUNS")
    p.add_argument("--kernel-paths", action="store_true",
                   help="instead: the Rust binary alone under each CPU kernel path (MKL's default "
                        "branch, MKL_CBWR=AVX2, MKL_CBWR=COMPATIBLE, --reproducible), interleaved; "
                        "what --reproducible costs")
    p.add_argument("--precision", choices=["bf16-mixed"],
                   help="instead: the dropout epoch in f32 and in this precision, Rust's two engines and "
                        "PyTorch (torch.autocast), interleaved, with the CPU's bf16 hardware and the "
                        "kernels oneDNN and MKL ran (CPU)")
    args = p.parse_args()
    started = time.monotonic()
    if args.budget is not None:
        DEADLINE = started + args.budget
    if args.kernel_paths:
        return kernel_paths(args)
    if args.precision:
        return precisions(args)

    import torch  # only for the device's name and the version
    device = args.device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit(f"error: --device {device}: no usable CUDA GPU")
        model = torch.cuda.get_device_name(torch.device(device))
        label = "cuda-" + re.sub(r"[^a-z0-9]+", "-", model.lower().replace("nvidia", "")).strip("-")
    else:
        model, label = cpu_model(), "cpu"

    env = dict(os.environ)
    common = ["--device", device, "--threads", str(args.threads)]
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    rust_bench = [args.bin, *common, "bench", "--epochs", str(args.epochs), "--wd-runs", str(args.wd_runs), *data]
    torch_bench = [sys.executable, COUNTERPART, *common, "bench", "--epochs", str(args.epochs),
                   "--wd-runs", str(args.wd_runs), *data]
    cuda = device.startswith("cuda")
    anchors = ["compile", "graph"] if cuda else []
    if args.anchors is not None:
        anchors = [] if args.anchors == "none" else [a for a in args.anchors.split(",") if a]
    sides = {"rust": {}, "rust-fused": {}, "rust-fused-eager": {}, "torch": {},
             "torch-compile": {}, "torch-graph": {}, "torch-book-loader": {}}
    state = {"libtorch": "?", "ops": {}, "rounds": 0, "failures": []}
    checkpoints = {"autograd": [], "fused": [], "bytes": 0}
    command_level = {}  # (section, engine, "with"/"without" checkpoints) -> whole-command seconds

    samples = None
    if args.samples:
        new = not os.path.exists(args.samples) or os.path.getsize(args.samples) == 0
        samples = open(args.samples, "a", newline="")
        if new:
            samples.write("round,side,metric,seconds,device,device_model,threads\n")
            samples.flush()

    def add(r, side, key, values):
        sides[side].setdefault(key, []).extend(values)
        if samples:
            for v in values:
                samples.write(f"{r},{side},{key},{v:.6g},{device},\"{model}\",{args.threads}\n")
            samples.flush()

    def rust_round(r):
        res = run_json(rust_bench, env)
        state["libtorch"] = res.get("libtorch_version", state["libtorch"])
        state["ops"] = res.get("ops_per_step", state["ops"])
        if "chart_draw_s" in res:
            state.setdefault("chart", []).append(res["chart_draw_s"])
            for engine in ("autograd", "fused"):
                t = res[engine]
                state.setdefault("epochs", {}).setdefault(engine, []).extend(
                    a + b for a, b in zip(t["dropout_train_s"], t["dropout_test_s"]))
                state.setdefault("wd_runs", {}).setdefault(engine, []).extend(t["wd_scratch_s"] + t["wd_concise_s"])
        for engine in ("autograd", "fused"):
            timings = res[engine]
            # Each checkpoint against the epoch (training and test pass) it followed.
            for c, a, b in zip(timings.get("checkpoint_s", []), timings["dropout_train_s"],
                               timings["dropout_test_s"]):
                checkpoints[engine].append(c / (a + b))
            checkpoints["bytes"] = timings.get("checkpoint_bytes", checkpoints["bytes"])
        for k, _ in ROWS[:4]:
            add(r, "rust", k, res["autograd"][k])
            add(r, "rust-fused", k, res["fused"][k])
            if res.get("fused_eager"):
                add(r, "rust-fused-eager", k, res["fused_eager"][k])

    def torch_round(r):
        res = run_json(torch_bench + ["--loader", "preloaded"], env)
        for k, _ in ROWS[:4]:
            add(r, "torch", k, res[k])

    def anchor_round(anchor):
        def go(r):
            res = run_json(torch_bench + ["--loader", "preloaded", "--mode", anchor], env)
            for k, _ in ROWS[:2]:
                add(r, f"torch-{anchor}", k, res[k])
        return go

    def book_loader_round(r):
        res = run_json(torch_bench + ["--loader", "book"], env)
        for k, _ in ROWS[:2]:
            add(r, "torch-book-loader", k, res[k])

    def process_round(tmp):
        # Each side writes its CSV files and TensorBoard event files (both by default).
        runs = lambda side: os.path.join(args.runs or tmp, side)
        commands = [("rust", [args.bin, *common, "--out", runs("rust"), "weight-decay"]),
                    ("rust-fused", [args.bin, *common, "--out", runs("rust-fused"), "weight-decay", "--engine", "fused"]),
                    ("torch", [sys.executable, COUNTERPART, *common, "--out", runs("torch"), "weight-decay"])]
        # What checkpoints cost a whole command: each section and engine with its default
        # checkpoints and with --no-checkpoints, interleaved (quiet: no chart, no TensorBoard).
        # The pair's order alternates with the round: on these machines the first of two
        # like commands was measured up to 25 % faster than the second.
        quiet = ["-q", "--no-tensorboard"]
        pairs = []
        for section, extra in (("weight-decay", []), ("dropout", ["--epochs", str(args.epochs), *data])):
            for engine in ("autograd", "fused"):
                pair = []
                for ckpt in ("with", "without"):
                    out = os.path.join(tmp, f"ckpt-{section}-{engine}-{ckpt}")
                    cmd = [args.bin, *common, "--out", out, section, "--engine", engine, "--overwrite",
                           *quiet, *extra] + ([] if ckpt == "with" else ["--no-checkpoints"])
                    pair.append(((section, engine, ckpt), cmd))
                pairs.append(pair)
        def go(r):
            for side, cmd in commands:
                add(r, side, "process_s", [timed(cmd, env)])
            for pair in pairs:
                for key, cmd in (pair if r % 2 else pair[::-1]):
                    command_level.setdefault(key, []).append(timed(cmd, env))
        return go

    def report():
        """The medians so far: the table (stdout, --table) and <label>.csv, rewritten."""
        table, rows = tabulate(args, sides, anchors, cuda, model, device, torch.__version__, state)
        if args.table:
            write_atomic(args.table, table + "\n")
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"{label}.csv")
        meta = [device, model, args.threads, state["rounds"], torch.__version__, state["libtorch"], "0.24.0",
                datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
        lines = [["metric", "description"] + [k.replace("-", "_") + "_s" for k in sides]
                 + ["rust_over_torch", "rust_fused_over_torch", "rust_fused_over_best_anchor",
                    "rust_samples", "torch_samples", "device", "device_model", "threads", "rounds",
                    "torch_version", "libtorch_version", "tch_version", "measured_utc"]]
        lines += [["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row] + meta
                  for row in rows]
        import io
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(lines)
        write_atomic(path, buf.getvalue())
        return table, path

    longest = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [("Rust bench", rust_round), ("PyTorch preloaded", torch_round)]
        jobs += [(f"PyTorch {a}", anchor_round(a)) for a in anchors]
        if not args.no_book_loader:
            jobs.append(("PyTorch book loader", book_loader_round))
        jobs.append(("whole commands", process_round(tmp)))
        for r in range(1, args.rounds + 1):
            left = remaining()
            if r > 1 and left is not None and left < 1.1 * longest:
                print(f"round {r} not started: {left:.0f} s of the budget left, the longest round took "
                      f"{longest:.0f} s", file=sys.stderr)
                break
            print(f"round {r}/{args.rounds}" + ("" if left is None else f" ({left:.0f} s of the budget left)"),
                  file=sys.stderr, flush=True)
            begin = time.monotonic()
            state["rounds"] = r
            for name, job in jobs:
                try:
                    job(r)
                except Failed as e:
                    state["failures"].append(f"round {r}, {name}: {e}")
                    print(f"FAILED: round {r}, {name}: {e}", file=sys.stderr, flush=True)
                if any(sides.values()):
                    report()
            longest = max(longest, time.monotonic() - begin)

    if not any(sides.values()):
        sys.exit("error: nothing was measured:\n" + "\n".join(state["failures"]))
    table, path = report()
    print("\n" + table)
    if checkpoints["autograd"]:
        print(f"\ncheckpoint after each dropout epoch ({checkpoints['bytes'] / 1e6:.2f} MB, written, synced, renamed),"
              " median cost per epoch in the same process: "
              + ", ".join(f"{e} engine {100 * statistics.median(checkpoints[e]):.2f} %"
                          for e in ("autograd", "fused") if checkpoints[e]))
    if command_level:
        med = lambda k: statistics.median(command_level[k]) if command_level.get(k) else None
        parts = []
        for section in ("weight-decay", "dropout"):
            for engine in ("autograd", "fused"):
                w, wo = med((section, engine, "with")), med((section, engine, "without"))
                if w and wo:
                    parts.append(f"{section} {engine} {w:.2f} s / {wo:.2f} s ({100 * (w / wo - 1):+.1f} %)")
        print(f"\ncheckpoints at the command level (whole command with its default checkpoints / with "
              f"--no-checkpoints, medians, interleaved; dropout {args.epochs} epochs): " + "; ".join(parts))
    if state.get("chart"):
        # The live chart: one draw per dropout epoch (each is longer than the 100 ms between
        # redraws), one draw when a weight-decay run ends (they are shorter), and at most one
        # per 100 ms of any run.
        wd_draw = statistics.median(c[0] for c in state["chart"])
        do_draw = statistics.median(c[1] for c in state["chart"])
        med = lambda d, e: statistics.median(d[e])
        print(f"\nlive chart (terminal only): one draw {1e3 * wd_draw:.2f} ms (weight decay, 100 epochs), "
              f"{1e3 * do_draw:.2f} ms (dropout); per dropout epoch "
              + ", ".join(f"{e} {100 * do_draw / med(state['epochs'], e):.2f} %" for e in ("autograd", "fused"))
              + "; per weight-decay run (its final figure) "
              + ", ".join(f"{e} {100 * wd_draw / med(state['wd_runs'], e):.1f} %" for e in ("autograd", "fused"))
              + f"; at most {100 * max(wd_draw, do_draw) / 0.1:.2f} % of any longer run")
    ops = state["ops"]
    if ops:
        print(f"\nlibtorch operators per training step (launching / all, counted by the Rust binary on {device}): "
              + ", ".join(f"{k} {v[0]} / {v[1]}" for k, v in ops.items() if v))
    print(f"\nwritten: {os.path.relpath(path)} ({state['rounds']} rounds in {time.monotonic() - started:.0f} s)",
          file=sys.stderr)
    if state["failures"]:
        print(f"{len(state['failures'])} measurement(s) failed:\n" + "\n".join(state["failures"]), file=sys.stderr)
        sys.exit(1)


def write_atomic(path, text):
    tmp_path = f"{path}.{os.getpid()}.tmp"
    with open(tmp_path, "w", newline="") as f:
        f.write(text)
    os.replace(tmp_path, path)


def tabulate(args, sides, anchors, cuda, model, device, torch_version, state):
    """The markdown table of the medians so far, and the rows of <label>.csv."""
    med = {s: {k: statistics.median(v) for k, v in d.items()} for s, d in sides.items()}
    fmt = lambda v: "—" if v is None else (f"{v:.4f}" if v < 1 else f"{v:.3f}")
    lines = [f"{model}, {args.threads} threads, device {device}; medians of {state['rounds']} interleaved rounds"
             f" (torch {torch_version}, libtorch {state['libtorch']} via tch 0.24.0)", ""]
    columns = [("rust", "Rust, autograd engine"), ("rust-fused", "Rust, fused engine" + (" (CUDA graphs)" if cuda else "")),
               ("rust-fused-eager", "Rust, fused engine, no graphs"), ("torch", "PyTorch, data preloaded"),
               ("torch-compile", "PyTorch, torch.compile reduce-overhead"), ("torch-graph", "PyTorch, whole step as a CUDA graph"),
               ("torch-book-loader", "PyTorch, book's loader")]
    columns = [(k, name) for k, name in columns if sides[k] or k in ("rust", "rust-fused", "torch", "torch-book-loader")]
    best_anchor = lambda key: min([v for v in (med["torch-compile"].get(key), med["torch-graph"].get(key)) if v] or [None],
                                  key=lambda v: v if v is not None else float("inf"))
    ratio = lambda a, b: a / b if a and b else None
    fmt_ratio = lambda v: "—" if v is None else f"{v:.2f}×"
    ratio_names = ["autograd / PyTorch", "fused / PyTorch"] + (["fused / best anchor"] if anchors else [])
    lines.append("| measurement (seconds) | " + " | ".join(name for _, name in columns) + " | "
                 + " | ".join(ratio_names) + " |")
    lines.append("|---|" + "---:|" * (len(columns) + len(ratio_names)))
    rows = []
    for key, name in ROWS:
        values = {k: med[k].get(key) for k, _ in columns}
        r, f, t = values.get("rust"), values.get("rust-fused"), values.get("torch")
        ratios = [ratio(r, t), ratio(f, t)] + ([ratio(f, best_anchor(key))] if anchors else [])
        lines.append(f"| {name} | " + " | ".join(fmt(values[k]) for k, _ in columns) + " | "
                     + " | ".join(fmt_ratio(x) for x in ratios) + " |")
        rows.append([key, name] + [med[k].get(key) for k in sides] + [ratio(r, t), ratio(f, t),
                    ratio(f, best_anchor(key)), len(sides["rust"].get(key, [])), len(sides["torch"].get(key, []))])
    return "\n".join(lines), rows


# The settings --kernel-paths compares: a name, the environment it adds, the flags it adds. The
# first is the reference of the ratios.
KERNEL_PATHS = [
    ("default", {}, []),
    ("MKL_CBWR=AVX2", {"MKL_CBWR": "AVX2"}, []),
    ("MKL_CBWR=COMPATIBLE", {"MKL_CBWR": "COMPATIBLE"}, []),
    ("--reproducible", {}, ["--reproducible"]),
]


def kernel_paths(args):
    """The Rust binary's timings under each of KERNEL_PATHS, interleaved in every round, both
    engines, with the kernels each process really ran (MKL's branch, ATen's capability)."""
    if args.device != "cpu":
        sys.exit("error: --kernel-paths measures CPU kernels: use --device cpu")
    model = cpu_model()
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    times = {name: {} for name, _, _ in KERNEL_PATHS}
    ran = {}
    for r in range(1, args.rounds + 1):
        print(f"round {r}/{args.rounds}", file=sys.stderr)
        for name, extra_env, flags in KERNEL_PATHS:
            env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "MKL_DYNAMIC")}
            env.update(extra_env)
            res = run_json([args.bin, "--device", "cpu", "--threads", str(args.threads), *flags, "bench",
                            "--epochs", str(args.epochs), "--wd-runs", str(args.wd_runs), *data], env)
            k = res["cpu_kernels"]
            ran[name] = f"MKL {k['mkl_branch']}{' (fixed)' if k['mkl_branch_fixed'] else ''}, ATen {k['aten_capability']}"
            for engine in ("autograd", "fused"):
                for key, _ in ROWS[:4]:
                    times[name].setdefault((engine, key), []).extend(res[engine][key])
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in times.items()}
    base = KERNEL_PATHS[0][0]
    print(f"\n{model}, {args.threads} threads; medians of {args.rounds} interleaved rounds; ratio to {base}\n")
    for name, _, _ in KERNEL_PATHS:
        print(f"- {name}: {ran[name]}")
    print()
    print("| measurement (seconds) | engine | " + " | ".join(n for n, _, _ in KERNEL_PATHS) + " |")
    print("|---|---|" + "---:|" * len(KERNEL_PATHS))
    rows = []
    for key, label in ROWS[:4]:
        for engine in ("autograd", "fused"):
            b = med[base][(engine, key)]
            cells = [f"{med[n][(engine, key)]:.4f}" + ("" if n == base else f" ({med[n][(engine, key)] / b:.2f}×)")
                     for n, _, _ in KERNEL_PATHS]
            print(f"| {label} | {engine} | " + " | ".join(cells) + " |")
            rows.append([key, engine] + [med[n][(engine, key)] for n, _, _ in KERNEL_PATHS]
                        + [med[n][(engine, key)] / b for n, _, _ in KERNEL_PATHS[1:]])
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cpu-kernel-paths.csv")
    slug = lambda n: re.sub(r"[^a-z0-9]+", "_", n.lower()).strip("_")
    meta = [model, args.threads, args.rounds, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
    tmp_path = f"{path}.{os.getpid()}.tmp"
    with open(tmp_path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["metric", "engine"] + [slug(n) + "_s" for n, _, _ in KERNEL_PATHS]
                   + [slug(n) + "_over_" + slug(base) for n, _, _ in KERNEL_PATHS[1:]]
                   + ["device_model", "threads", "rounds", "measured_utc"])
        for row in rows:
            w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row] + meta)
    os.replace(tmp_path, path)
    print(f"\nwritten: {os.path.relpath(path)}", file=sys.stderr)


def bf16_kernels():
    """What this CPU offers bf16 GEMMs (its flags), the kernel oneDNN runs for libtorch's bf16
    GEMM (ONEDNN_VERBOSE: the autograd engines') and what MKL's gemm_bf16bf16f32 runs on
    (MKL_VERBOSE: the Rust fused engine's), as a line for the table's header."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    has = [f for f in ("amx_bf16", "avx512_bf16") if f in flags] or ["no bf16 instructions"]
    probe = ("import torch; a = torch.randn(256, 784).bfloat16(); b = torch.randn(784, 256).bfloat16(); "
             "torch.mm(a, b)")
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout
    kernel = next((line.split(",")[6] for line in out.splitlines() if ",exec,cpu,matmul," in line),
                  "no oneDNN matmul (ATen's own bf16 GEMM)")
    # MKL's Fortran gemm_bf16bf16f32 on 2×2 matrices, called as src/cpu/mod.rs calls it.
    mkl_probe = (
        "import ctypes, os, torch\n"
        "lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), 'lib', 'libtorch_cpu.so'))\n"
        "i = lambda v: ctypes.byref(ctypes.c_int(v)); f = lambda v: ctypes.byref(ctypes.c_float(v))\n"
        "a = torch.ones(2, 2).bfloat16(); c = torch.zeros(2, 2)\n"
        "lib.gemm_bf16bf16f32_(b'N', b'N', i(2), i(2), i(2), f(1), ctypes.c_void_p(a.data_ptr()), i(2),"
        " ctypes.c_void_p(a.data_ptr()), i(2), f(0), ctypes.c_void_p(c.data_ptr()), i(2))\n")
    env = dict(os.environ, MKL_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", mkl_probe], env=env, capture_output=True, text=True).stdout
    header = next((line for line in out.splitlines() if line.startswith("MKL_VERBOSE oneMKL")), "")
    version = " ".join(header.split()[1:5]) if header else ""
    if not header:
        mkl = "no MKL bf16 GEMM (libtorch's f32 GEMM instead)"
    elif "AMX" in header:
        mkl = f"MKL's gemm_bf16bf16f32 ({version}, AMX)"
    else:
        mkl = f"MKL's gemm_bf16bf16f32 ({version}, no AMX)"
    return (f"CPU bf16: {', '.join(has)}; a 256×784·784×256 bf16 GEMM ran oneDNN's {kernel} "
            f"(autograd engines); the fused engine's GEMMs: {mkl}")


def precisions(args):
    """The dropout epoch (concise) in f32 and in args.precision: Rust's autograd and fused
    engines and PyTorch eager (data preloaded; torch.autocast), each process in turn, the order
    alternating by round; each precision against its own f32 and against PyTorch's f32."""
    if args.device != "cpu":
        sys.exit("error: --precision measures the CPU kernels: use --device cpu")
    model = cpu_model()
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    common = ["--device", "cpu", "--threads", str(args.threads)]
    low = args.precision
    times = {}
    commands = []
    for precision in ("f32", low):
        flags = ["--epochs", str(args.epochs), "--wd-runs", "1", *data, "--precision", precision]
        commands.append((("rust", precision), [args.bin, *common, "bench", *flags]))
        commands.append((("torch", precision), [sys.executable, COUNTERPART, *common, "bench", *flags]))
    env = dict(os.environ)
    for r in range(1, args.rounds + 1):
        print(f"round {r}/{args.rounds}", file=sys.stderr)
        for (side, precision), cmd in (commands if r % 2 else commands[::-1]):
            res = run_json(cmd, env)
            for key, _ in ROWS[:2]:
                if side == "rust":
                    for engine in ("autograd", "fused"):
                        times.setdefault((f"rust-{engine}", precision, key), []).extend(res[engine][key])
                else:
                    times.setdefault(("torch", precision, key), []).extend(res[key])
    med = {k: statistics.median(v) for k, v in times.items()}
    sides = [("rust-autograd", "Rust autograd"), ("rust-fused", "Rust fused"), ("torch", "PyTorch")]
    print(f"\n{model}, {args.threads} threads; medians of {args.rounds} interleaved rounds")
    print(f"{bf16_kernels()}\n")
    print("| measurement (seconds) | " + " | ".join(f"{n} {p}" for _, n in sides for p in ("f32", low))
          + " | " + " | ".join(f"{n} {low} / its f32" for _, n in sides)
          + f" | Rust fused {low} / PyTorch f32 | Rust fused {low} / PyTorch {low} |")
    print("|---|" + "---:|" * (3 * 2 + 3 + 2))
    rows = []
    for key, label in ROWS[:2]:
        v = {(side, p): med[(side, p, key)] for side, _ in sides for p in ("f32", low)}
        ratios = [v[(side, low)] / v[(side, "f32")] for side, _ in sides]
        ratios += [v[("rust-fused", low)] / v[("torch", "f32")], v[("rust-fused", low)] / v[("torch", low)]]
        print(f"| {label} | " + " | ".join(f"{v[(side, p)]:.4f}" for side, _ in sides for p in ("f32", low))
              + " | " + " | ".join(f"{x:.2f}×" for x in ratios) + " |")
        rows.append([key] + [v[(side, p)] for side, _ in sides for p in ("f32", low)] + ratios)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"cpu-{low}.csv")
    slug = lambda n: re.sub(r"[^a-z0-9]+", "_", n.lower()).strip("_")
    meta = [model, bf16_kernels(), args.threads, args.rounds,
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
    tmp_path = f"{path}.{os.getpid()}.tmp"
    with open(tmp_path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["metric"] + [f"{side.replace('-', '_')}_{slug(p)}_s" for side, _ in sides for p in ("f32", low)]
                   + [f"{side.replace('-', '_')}_{slug(low)}_over_f32" for side, _ in sides]
                   + [f"rust_fused_{slug(low)}_over_torch_f32", f"rust_fused_{slug(low)}_over_torch_{slug(low)}"]
                   + ["device_model", "kernels", "threads", "rounds", "measured_utc"])
        for row in rows:
            w.writerow([f"{x:.6g}" if isinstance(x, float) else x for x in row] + meta)
    os.replace(tmp_path, path)
    print(f"\nwritten: {os.path.relpath(path)}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        sys.exit(f"error: {e}")
