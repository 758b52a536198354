//! The weight-decay regression trained by the fused engine: closed-form gradients, and every
//! λ trained at once as the columns of one model. On the CPU the whole loop runs in Rust over
//! host memory (the problem is a few thousand multiply-adds per step, far below the cost of a
//! libtorch call); elsewhere it is a handful of tensor operations per step.
//!
//! With the same seed the data, the initial parameters and the mini-batches are those of the
//! autograd engine (the same random draws in the same order); only the rounding differs.
use crate::cli::Impl;
use crate::data::{batches, Split};
use crate::experiments::weight_decay::{concise_net, init_params, Config, Data, Epoch, Trained};
use tch::{nn, Kind, Tensor};

/// Trains one model per λ, column k of the weight matrix being the model with `lambdas[k]`.
///
/// Scratch: loss ½r² + λ‖w‖²/2 per example, `w -= lr·grad/batch_size`, so
/// w ← (1 − lr·λ·B/batch_size)·w − (lr/batch_size)·Xᵀr. Concise: MSE, decay λ on the weight
/// only, so w ← (1 − lr·λ)·w − (2·lr/B)·Xᵀr. The bias follows the same steps without decay.
pub fn train(cfg: &Config, implementation: Impl, lambdas: &[f64], data: &Data) -> Vec<Trained> {
    train_with(
        cfg,
        implementation,
        lambdas,
        data,
        data.train.x.device() == tch::Device::Cpu,
    )
}

/// [`train`] with the choice of Rust loops on the host (`host_loops`, CPU data only) or
/// tensor operations on the data's device.
pub fn train_with(
    cfg: &Config,
    implementation: Impl,
    lambdas: &[f64],
    data: &Data,
    host_loops: bool,
) -> Vec<Trained> {
    let _guard = tch::no_grad_guard();
    let device = data.train.x.device();
    let k = lambdas.len() as i64;
    let (w0, b0) = match implementation {
        Impl::Scratch => init_params(cfg.num_inputs, device),
        Impl::Concise => {
            let vs = nn::VarStore::new(device);
            let net = concise_net(&vs.root(), cfg.num_inputs);
            (net.weight.tr(), net.bias.shallow_clone())
        }
    };
    let mut w = w0.detach().repeat([1, k]);
    let mut b = b0.detach().reshape([1, 1]).repeat([1, k]);
    if host_loops {
        return train_on_host(cfg, implementation, lambdas, data, &w, &b);
    }
    let lambda = Tensor::from_slice(&lambdas.iter().map(|&l| l as f32).collect::<Vec<_>>())
        .to_device(device);
    let half = matches!(implementation, Impl::Scratch);
    let mut losses = Vec::with_capacity(2 * cfg.epochs);
    for _ in 0..cfg.epochs {
        for (x, y) in batches::shuffled(&data.train, cfg.batch_size) {
            let n = x.size()[0] as f64;
            let (decay_per_lambda, step) = step_sizes(cfg, implementation, n);
            let mut r = b.addmm(&x, &w) - y;
            r *= -step;
            w *= 1.0 - &lambda * decay_per_lambda;
            let _ = w.addmm_(&x.tr(), &r);
            b += r.sum_dim_intlist(0, true, Kind::Float);
        }
        for split in [&data.train, &data.test] {
            losses.push(mean_loss(split, &w, &b, half));
        }
    }
    let losses = Vec::<f64>::try_from(
        Tensor::stack(&losses, 0)
            .to_kind(Kind::Double)
            .flatten(0, -1),
    )
    .expect("f64 losses");
    let norms = Vec::<f64>::try_from(w.norm_scalaropt_dim(2, [0], false).to_kind(Kind::Double))
        .expect("f64 norms");
    split_columns(cfg.epochs, &losses, &norms)
}

/// `losses[(2·epoch + split)·k + j]` and `norms[j]` → one [`Trained`] per column j.
fn split_columns(epochs: usize, losses: &[f64], norms: &[f64]) -> Vec<Trained> {
    let k = norms.len();
    (0..k)
        .map(|j| Trained {
            curve: (0..epochs)
                .map(|e| Epoch {
                    epoch: e + 1,
                    train_loss: losses[(2 * e) * k + j],
                    test_loss: losses[(2 * e + 1) * k + j],
                })
                .collect(),
            w_norm: norms[j],
        })
        .collect()
}

/// For a batch of `n` examples: the factor that multiplies λ in the weight's decay
/// (w ← (1 − λ·factor)·w) and the step on Xᵀr and Σr.
fn step_sizes(cfg: &Config, implementation: Impl, n: f64) -> (f64, f64) {
    match implementation {
        Impl::Scratch => (
            cfg.lr * n / cfg.batch_size as f64,
            cfg.lr / cfg.batch_size as f64,
        ),
        Impl::Concise => (cfg.lr, 2.0 * cfg.lr / n),
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
fn train_on_host(
    cfg: &Config,
    implementation: Impl,
    lambdas: &[f64],
    data: &Data,
    w: &Tensor,
    b: &Tensor,
) -> Vec<Trained> {
    let (d, k) = (cfg.num_inputs, lambdas.len());
    let (train_x, train_y, test_x, test_y) = (
        host(&data.train.x),
        host(&data.train.y),
        host(&data.test.x),
        host(&data.test.y),
    );
    let (mut w, mut b) = (host(w), host(b)); // w: [d, k] row-major, b: [k]
    let half = matches!(implementation, Impl::Scratch);
    let mut r = vec![0f32; cfg.batch_size * k];
    let mut losses = Vec::with_capacity(2 * cfg.epochs * k);
    let n_train = data.train.len();
    for _ in 0..cfg.epochs {
        let order =
            Vec::<i64>::try_from(Tensor::randperm(n_train, (Kind::Int64, tch::Device::Cpu)))
                .expect("i64 order");
        for rows in order.chunks(cfg.batch_size) {
            let n = rows.len();
            let (decay_per_lambda, step) = step_sizes(cfg, implementation, n as f64);
            // r = (Xw + b − y) · (−step), one row per example, one column per λ
            for (i, &row) in rows.iter().enumerate() {
                let x = &train_x[row as usize * d..(row as usize + 1) * d];
                let ri = &mut r[i * k..(i + 1) * k];
                ri.copy_from_slice(&b);
                for (xj, wj) in x.iter().zip(w.chunks_exact(k)) {
                    ri.iter_mut().zip(wj).for_each(|(rv, wv)| *rv += xj * wv);
                }
                ri.iter_mut()
                    .for_each(|rv| *rv = (*rv - train_y[row as usize]) * -step as f32);
            }
            // w ← decay ⊙ w + Xᵀr;  b ← b + Σ r
            for (j, wj) in w.chunks_exact_mut(k).enumerate() {
                for (c, wv) in wj.iter_mut().enumerate() {
                    let grad: f32 = rows
                        .iter()
                        .enumerate()
                        .map(|(i, &row)| train_x[row as usize * d + j] * r[i * k + c])
                        .sum();
                    *wv = *wv * (1.0 - lambdas[c] * decay_per_lambda) as f32 + grad;
                }
            }
            for (c, bv) in b.iter_mut().enumerate() {
                *bv += (0..n).map(|i| r[i * k + c]).sum::<f32>();
            }
        }
        for (x, y) in [(&train_x, &train_y), (&test_x, &test_y)] {
            let mut sums = vec![0f64; k];
            for (xi, &yi) in x.chunks_exact(d).zip(y.iter()) {
                for (c, s) in sums.iter_mut().enumerate() {
                    let pred: f32 = b[c]
                        + xi.iter()
                            .zip(w.iter().skip(c).step_by(k))
                            .map(|(a, bw)| a * bw)
                            .sum::<f32>();
                    let e = (pred - yi) as f64;
                    *s += e * e;
                }
            }
            let scale = if half { 0.5 } else { 1.0 } / y.len() as f64;
            losses.extend(sums.iter().map(|s| s * scale));
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
    split_columns(cfg.epochs, &losses, &norms)
}
