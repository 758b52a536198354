//! Weight decay trained by the fused engine: closed-form gradients, and every λ trained at
//! once as the columns of one model. On the CPU the whole loop runs in Rust over host memory
//! (the problem is a few thousand multiply-adds per step, far below the cost of a libtorch
//! call); elsewhere it is a handful of tensor operations per step.
//!
//! Given the book's data, initial parameters and seed, the mini-batches are those of the
//! autograd engine (the same random draws in the same order); only the rounding differs.
//! It knows nothing of the book's code beside it: the caller passes the data and the initial
//! parameters and gets each λ's losses back as its own rows.
use crate::data::{batches, Split};
use crate::experiment::{fmt_num, EpochRow};
use crate::options::Impl;
use crate::progress;
use crate::stop::{self, Status};
use std::ops::ControlFlow;
use tch::{Kind, Tensor};

/// The SGD schedule: epochs, learning rate, nominal batch size.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
}

/// Where the steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    /// Rust loops over host copies of the data and parameters (CPU data only).
    Host,
    /// Tensor operations on the data's device.
    Tensors,
}

/// One λ's model after training: its curve (rows made by the caller's `row`), the norm of its
/// weight, the final weight (`[inputs]`, on the CPU) and bias, and how it ended.
pub struct Column<R> {
    pub curve: Vec<R>,
    pub w_norm: f64,
    pub weight: Tensor,
    pub bias: f64,
    pub status: Status,
}

/// Makes a curve row from (epoch, train loss, test loss, seconds since the start).
pub type MakeRow<R> = fn(usize, f64, f64, f64) -> R;

/// Where a stopped group goes on from (its checkpoint's): the finished epochs, the weights
/// (`[inputs, k]`) and biases (`[1, k]`) after them, each λ's curve and status, and the
/// seconds trained before.
pub struct Start<R> {
    pub epoch: usize,
    pub w: Tensor,
    pub b: Tensor,
    pub curves: Vec<Vec<R>>,
    pub status: Vec<Status>,
    pub before: f64,
}

/// The group after a finished epoch, for its checkpoint.
pub struct Snapshot<'a, R> {
    pub epoch: usize,
    pub w: Tensor,
    pub b: Tensor,
    pub curves: &'a [Vec<R>],
    pub status: &'a [Status],
}

/// What is shown each finished epoch (`Break` stops training: the checkpoint could not be
/// written).
pub type Keep<'a, R> = &'a mut dyn FnMut(Snapshot<'_, R>) -> ControlFlow<()>;

/// What else a group does: start from a checkpoint's state, keep each finished epoch (its
/// checkpoint), write each λ's rows to its TensorBoard run (one per λ, or none).
pub struct Hooks<'a, R> {
    pub start: Option<Start<R>>,
    pub keep: Option<Keep<'a, R>>,
    pub boards: Vec<crate::tensorboard::Run>,
}

impl<R> Default for Hooks<'_, R> {
    fn default() -> Self {
        Hooks {
            start: None,
            keep: None,
            boards: Vec::new(),
        }
    }
}

/// Trains one model per λ from the initial weight `w0` (`[inputs, 1]`) and bias `b0`, column k
/// of the weight matrix being the model with `lambdas[k]`, with [`Loops::Host`] on the CPU and
/// [`Loops::Tensors`] elsewhere; with `hooks`, from its start, keeping each epoch.
///
/// Scratch: loss ½r² + λ‖w‖²/2 per example, `w -= lr·grad/batch_size`, so
/// w ← (1 − lr·λ·B/batch_size)·w − (lr/batch_size)·Xᵀr. Concise: MSE, decay λ on the weight
/// only, so w ← (1 − lr·λ)·w − (2·lr/B)·Xᵀr. The bias follows the same steps without decay.
#[allow(clippy::too_many_arguments)]
pub fn train<R: EpochRow>(
    schedule: Schedule,
    version: Impl,
    lambdas: &[f64],
    (train, test): (&Split, &Split),
    (w0, b0): (&Tensor, &Tensor),
    loops: Loops,
    progress: &progress::Epochs,
    row: MakeRow<R>,
    hooks: Hooks<'_, R>,
) -> Vec<Column<R>> {
    let _guard = tch::no_grad_guard();
    let device = train.x.device();
    let k = lambdas.len() as i64;
    let mut w = w0.detach().repeat([1, k]);
    let mut b = b0.detach().reshape([1, 1]).repeat([1, k]);
    let mut columns = Columns::new(lambdas, row);
    columns.boards = hooks.boards;
    let mut first = 1;
    if let Some(start) = hooks.start {
        (w, b, first) = (start.w, start.b, start.epoch + 1);
        columns.resume(start.curves, start.status, start.before, progress);
    }
    let mut keep = hooks.keep;
    if loops == Loops::Host && device == tch::Device::Cpu {
        return train_on_host(
            schedule,
            version,
            lambdas,
            (train, test),
            (&w, &b),
            first,
            keep,
            columns,
            progress,
        );
    }
    let lambda = Tensor::from_slice(&lambdas.iter().map(|&l| l as f32).collect::<Vec<_>>())
        .to_device(device);
    let half = matches!(version, Impl::Scratch);
    for epoch in first..=schedule.epochs {
        for (x, y) in batches::shuffled(train, schedule.batch_size) {
            if stop::requested().is_some() {
                break;
            }
            let n = x.size()[0] as f64;
            let (decay_per_lambda, step) = step_sizes(schedule, version, n);
            let mut r = b.addmm(&x, &w) - y;
            r *= -step;
            w *= 1.0 - &lambda * decay_per_lambda;
            let _ = w.addmm_(&x.tr(), &r);
            b += r.sum_dim_intlist(0, true, Kind::Float);
        }
        let losses = Tensor::stack(
            &[
                mean_loss(train, &w, &b, half),
                mean_loss(test, &w, &b, half),
            ],
            0,
        );
        let losses =
            Vec::<f64>::try_from(losses.to_kind(Kind::Double).flatten(0, -1)).expect("f64 losses");
        if !columns.epoch(epoch, &losses, progress)
            || columns.keep(&mut keep, epoch, w.shallow_clone(), b.shallow_clone())
        {
            break;
        }
    }
    let norms = Vec::<f64>::try_from(w.norm_scalaropt_dim(2, [0], false).to_kind(Kind::Double))
        .expect("f64 norms");
    let (w, b) = (host(&w.tr().contiguous()), host(&b));
    columns.finish(&norms, &w, &b)
}

/// The curves of the k models trained together, each ending on its own when its loss becomes
/// NaN or infinite (the columns are independent), all of them on a stop request. A column
/// whose status is still `Ok` is still training.
struct Columns<'a, R> {
    start: std::time::Instant,
    /// Seconds trained before `start` (a resumed group's).
    before: f64,
    /// Each λ's TensorBoard run (or none).
    boards: Vec<crate::tensorboard::Run>,
    lambdas: &'a [f64],
    curves: Vec<Vec<R>>,
    status: Vec<Status>,
    row: MakeRow<R>,
}

impl<'a, R: EpochRow> Columns<'a, R> {
    fn new(lambdas: &'a [f64], row: MakeRow<R>) -> Columns<'a, R> {
        let k = lambdas.len();
        Columns {
            start: std::time::Instant::now(),
            before: 0.0,
            boards: Vec::new(),
            lambdas,
            curves: vec![Vec::new(); k],
            status: vec![Status::Ok; k],
            row,
        }
    }

    /// Records a finished epoch from `losses` = k train losses then k test losses; false
    /// when training should end (a stop was requested or every column diverged).
    fn epoch(&mut self, epoch: usize, losses: &[f64], progress: &progress::Epochs) -> bool {
        let k = self.lambdas.len();
        if stop::requested().is_some() {
            for s in self.status.iter_mut().filter(|s| **s == Status::Ok) {
                *s = Status::Interrupted;
            }
            return false;
        }
        let mut figures = Vec::new();
        // The live chart's values: each λ's train and test loss (NaN: not drawn).
        let mut values = vec![f64::NAN; 2 * k];
        for j in 0..k {
            if self.status[j] != Status::Ok {
                continue;
            }
            let (train_loss, test_loss) = (losses[j], losses[k + j]);
            let row = (self.row)(
                epoch,
                train_loss,
                test_loss,
                self.before + self.start.elapsed().as_secs_f64(),
            );
            if row.finite() {
                if !self.log(j, &row) {
                    self.status
                        .iter_mut()
                        .for_each(|s| *s = Status::Interrupted);
                    return false;
                }
                self.curves[j].push(row);
                values[2 * j] = train_loss;
                values[2 * j + 1] = test_loss;
                figures.push(format!(
                    "λ={} test {test_loss:.2e}",
                    fmt_num(self.lambdas[j])
                ));
            } else {
                self.status[j] = Status::Diverged;
            }
        }
        progress.epoch(epoch, &figures.join(", "), &values);
        self.status.contains(&Status::Ok)
    }

    /// Goes on from a checkpoint's curves and statuses (written to the boards again).
    fn resume(
        &mut self,
        curves: Vec<Vec<R>>,
        status: Vec<Status>,
        before: f64,
        progress: &progress::Epochs,
    ) {
        for (j, rows) in curves.iter().enumerate() {
            for row in rows {
                self.log(j, row);
            }
        }
        // The live chart: each λ's rows so far, epoch by epoch.
        let epochs = curves.iter().map(Vec::len).max().unwrap_or(0);
        for e in 0..epochs {
            let values: Vec<f64> = (curves.iter())
                .flat_map(|rows| match rows.get(e) {
                    Some(row) => row.plotted(),
                    None => vec![f64::NAN; 2],
                })
                .collect();
            progress.resumed(e + 1, &values);
        }
        (self.curves, self.status, self.before) = (curves, status, before);
    }

    /// Writes column `j`'s `row` to its board; false when that failed.
    fn log(&self, j: usize, row: &R) -> bool {
        self.boards.get(j).is_none_or(|b| {
            let step = crate::experiment::board_step(row);
            b.scalars(step, &crate::experiment::board_scalars(row))
        })
    }

    /// Shows `keep` the group after `epoch` (weights `w`, biases `b`); true when it says stop.
    fn keep(&self, keep: &mut Option<Keep<'_, R>>, epoch: usize, w: Tensor, b: Tensor) -> bool {
        let Some(keep) = keep else {
            return false;
        };
        let snapshot = Snapshot {
            epoch,
            w,
            b,
            curves: &self.curves,
            status: &self.status,
        };
        keep(snapshot).is_break()
    }

    /// The columns' results from the final norms, weights (`[k, inputs]` row-major: one row
    /// per λ) and biases.
    fn finish(self, norms: &[f64], weights: &[f32], biases: &[f32]) -> Vec<Column<R>> {
        let inputs = weights.len() / self.lambdas.len();
        self.curves
            .into_iter()
            .zip(self.status)
            .zip(norms)
            .zip(weights.chunks_exact(inputs).zip(biases))
            .map(|(((curve, status), &w_norm), (weight, &bias))| Column {
                curve,
                w_norm,
                weight: Tensor::from_slice(weight),
                bias: bias as f64,
                status,
            })
            .collect()
    }
}

/// For a batch of `n` examples: the factor that multiplies λ in the weight's decay
/// (w ← (1 − λ·factor)·w) and the step on Xᵀr and Σr.
fn step_sizes(schedule: Schedule, version: Impl, n: f64) -> (f64, f64) {
    let (lr, batch_size) = (schedule.lr, schedule.batch_size as f64);
    match version {
        Impl::Scratch => (lr * n / batch_size, lr / batch_size),
        Impl::Concise => (lr, 2.0 * lr / n),
    }
}

/// Mean per-example loss of every column: ½·r² (scratch) or r² (concise), without penalty.
fn mean_loss(split: &Split, w: &Tensor, b: &Tensor, half: bool) -> Tensor {
    let r = b.addmm(&split.x, w) - &split.y;
    let mse = r.square().mean_dim(0, false, Kind::Float);
    if half {
        mse / 2
    } else {
        mse
    }
}

fn host(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().flatten(0, -1)).expect("f32 values")
}

/// The same training in Rust loops over host copies of the data and parameters; only the
/// per-epoch permutation comes from libtorch (the same draws as the other engines).
#[allow(clippy::too_many_arguments)]
fn train_on_host<R: EpochRow>(
    schedule: Schedule,
    version: Impl,
    lambdas: &[f64],
    (train, test): (&Split, &Split),
    (w, b): (&Tensor, &Tensor),
    first: usize,
    mut keep: Option<Keep<'_, R>>,
    mut columns: Columns<'_, R>,
    progress: &progress::Epochs,
) -> Vec<Column<R>> {
    let (d, k) = (w.size()[0] as usize, lambdas.len());
    let (train_x, train_y, test_x, test_y) =
        (host(&train.x), host(&train.y), host(&test.x), host(&test.y));
    let (mut w, mut b) = (host(w), host(b)); // w: [d, k] row-major, b: [k]
    let half = matches!(version, Impl::Scratch);
    let mut r = vec![0f32; schedule.batch_size * k];
    let mut x_rows: Vec<&[f32]> = Vec::with_capacity(schedule.batch_size);
    let n_train = train.len();
    for epoch in first..=schedule.epochs {
        let order =
            Vec::<i64>::try_from(Tensor::randperm(n_train, (Kind::Int64, tch::Device::Cpu)))
                .expect("i64 order");
        for rows in order.chunks(schedule.batch_size) {
            if stop::requested().is_some() {
                break;
            }
            let n = rows.len();
            let (decay_per_lambda, step) = step_sizes(schedule, version, n as f64);
            // The batch's rows of X. Below, no index arithmetic in the inner loops (zips and
            // ranges instead of `enumerate` and `i * k + c`): this crate keeps overflow checks
            // on in release, and checked counters there made the run 25 % slower.
            x_rows.clear();
            x_rows.extend(
                rows.iter()
                    .map(|&row| &train_x[row as usize * d..(row as usize + 1) * d]),
            );
            // r = (Xw + b − y) · (−step), one row per example, one column per λ
            for ((x, &row), ri) in x_rows.iter().zip(rows).zip(r.chunks_exact_mut(k)) {
                ri.copy_from_slice(&b);
                for (xj, wj) in x.iter().zip(w.chunks_exact(k)) {
                    ri.iter_mut().zip(wj).for_each(|(rv, wv)| *rv += xj * wv);
                }
                ri.iter_mut()
                    .for_each(|rv| *rv = (*rv - train_y[row as usize]) * -step as f32);
            }
            // w ← decay ⊙ w + Xᵀr;  b ← b + Σ r
            let r = &r[..n * k];
            for (wj, j) in w.chunks_exact_mut(k).zip(0..d) {
                for ((wv, c), &lambda) in wj.iter_mut().zip(0..k).zip(lambdas) {
                    let grad: f32 = x_rows
                        .iter()
                        .zip(r.chunks_exact(k))
                        .map(|(x, ri)| x[j] * ri[c])
                        .sum();
                    *wv = *wv * (1.0 - lambda * decay_per_lambda) as f32 + grad;
                }
            }
            for (bv, c) in b.iter_mut().zip(0..k) {
                *bv += r.chunks_exact(k).map(|ri| ri[c]).sum::<f32>();
            }
        }
        let mut losses = Vec::with_capacity(2 * k);
        for (x, y) in [(&train_x, &train_y), (&test_x, &test_y)] {
            let mut sums = vec![0f64; k];
            for (xi, &yi) in x.chunks_exact(d).zip(y.iter()) {
                for ((s, c), bc) in sums.iter_mut().zip(0..k).zip(&b) {
                    let pred: f32 = bc
                        + xi.iter()
                            .zip(w.chunks_exact(k))
                            .map(|(a, wj)| a * wj[c])
                            .sum::<f32>();
                    let e = (pred - yi) as f64;
                    *s += e * e;
                }
            }
            let scale = if half { 0.5 } else { 1.0 } / y.len() as f64;
            losses.extend(sums.iter().map(|s| s * scale));
        }
        if !columns.epoch(epoch, &losses, progress) {
            break;
        }
        if keep.is_some() {
            let w = Tensor::from_slice(&w).reshape([d as i64, k as i64]);
            let b = Tensor::from_slice(&b).reshape([1, k as i64]);
            if columns.keep(&mut keep, epoch, w, b) {
                break;
            }
        }
    }
    let norms: Vec<f64> = (0..k)
        .map(|c| {
            w.iter()
                .skip(c)
                .step_by(k)
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    // w is [inputs, k] row-major: one column per λ.
    let by_lambda: Vec<f32> = (0..k)
        .flat_map(|c| w.iter().skip(c).step_by(k).copied().collect::<Vec<_>>())
        .collect();
    columns.finish(&norms, &by_lambda, &b)
}
