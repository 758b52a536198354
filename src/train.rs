//! The train/evaluate loop shared by the experiments (the book's `train_epoch_ch3`,
//! `evaluate_loss` and `evaluate_accuracy`), with metric sums kept on the device.
use crate::data::{batches::Batches, Split};
use tch::{nn, Kind, Tensor};

/// How parameters are updated from a mini-batch's per-example losses (d2l's `updater`).
pub trait Updater {
    fn update(&mut self, losses: &Tensor);
}

/// A `torch.optim` optimizer: zero the gradients, backward of the mean loss, step.
impl Updater for nn::Optimizer {
    fn update(&mut self, losses: &Tensor) {
        self.zero_grad();
        losses.mean(None).backward();
        self.step();
    }
}

/// The book's from-scratch `sgd`: backward of the summed loss, then, outside autograd,
/// `p -= lr · grad / batch_size` and the gradient is zeroed.
pub struct MinibatchSgd {
    pub params: Vec<Tensor>,
    pub lr: f64,
    /// The nominal batch size, as the book divides by it (the last batch may be smaller).
    pub batch_size: usize,
}

impl Updater for MinibatchSgd {
    fn update(&mut self, losses: &Tensor) {
        losses.sum(None).backward();
        tch::no_grad(|| {
            for p in &mut self.params {
                let mut grad = p.grad();
                let _ = p.g_sub_(&(&grad * self.lr / self.batch_size as f64));
                let _ = grad.zero_();
            }
        });
    }
}

/// A classifier with its updater, as the dropout experiment trains it.
pub trait Learner {
    /// One pass over shuffled training batches with dropout on.
    fn train_epoch(&mut self, train: &Split) -> Sums;
    /// Correct predictions over a split with dropout off (an on-device scalar).
    fn count_correct(&self, split: &Split) -> Tensor;
}

/// Running sums of one training epoch, kept on the device and read once at its end.
pub struct Sums {
    loss: Tensor,
    correct: Tensor,
    count: i64,
}

impl Sums {
    pub fn new(device: tch::Device) -> Sums {
        Sums {
            loss: Tensor::zeros([], (Kind::Double, device)),
            correct: Tensor::zeros([], (Kind::Int64, device)),
            count: 0,
        }
    }

    /// Adds a batch's per-example losses and correct predictions.
    pub fn add(&mut self, losses: &Tensor, outputs: &Tensor, y: &Tensor) {
        let _ = self.loss.g_add_(&losses.detach().sum(Kind::Double));
        let _ = self.correct.g_add_(&correct(outputs, y));
        self.count += y.size()[0];
    }

    /// Sums already computed on the host (CPU), as tensors like the others.
    pub fn from_host(loss: f64, correct: i64, count: i64) -> Sums {
        Sums {
            loss: Tensor::from(loss),
            correct: Tensor::from(correct),
            count,
        }
    }

    /// Sums already on the device: the loss sum (f64), the correct count (i64), the examples.
    pub fn from_device(loss: Tensor, correct: Tensor, count: i64) -> Sums {
        Sums {
            loss,
            correct,
            count,
        }
    }

    /// Sum of the per-example losses (f64, on the device).
    pub fn loss(&self) -> &Tensor {
        &self.loss
    }

    /// Number of correct predictions (on the device).
    pub fn correct(&self) -> &Tensor {
        &self.correct
    }

    /// Number of examples seen.
    pub fn count(&self) -> i64 {
        self.count
    }
}

/// Reads several on-device scalars with a single transfer (one synchronisation).
pub fn read<const N: usize>(scalars: &[&Tensor; N]) -> [f64; N] {
    let all: Vec<Tensor> = scalars
        .iter()
        .map(|t| t.to_kind(Kind::Double).reshape([1]))
        .collect();
    let values = Vec::<f64>::try_from(Tensor::cat(&all, 0)).expect("f64 scalars");
    values.try_into().expect("one value per scalar")
}

/// Number of rows whose arg-max matches the label (an on-device scalar).
pub fn correct(outputs: &Tensor, y: &Tensor) -> Tensor {
    outputs.argmax(1, false).eq_tensor(y).sum(Kind::Int64)
}

/// One pass over the training batches (the book's `train_epoch_ch3`): forward in training
/// mode, per-example losses, update. With `sums`, the losses and correct predictions of each
/// batch are added to them on the device. When a stop is requested (Ctrl-C) the pass ends at
/// the next batch boundary; the caller checks [`crate::stop::requested`] and drops the epoch.
pub fn train_epoch(
    batches: Batches<'_>,
    net: &dyn Fn(&Tensor) -> Tensor,
    loss: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    updater: &mut dyn Updater,
    mut sums: Option<&mut Sums>,
) {
    for (x, y) in batches {
        if crate::stop::requested().is_some() {
            return;
        }
        let outputs = net(&x);
        let l = loss(&outputs, &y);
        updater.update(&l);
        if let Some(sums) = sums.as_deref_mut() {
            sums.add(&l, &outputs, &y);
        }
    }
}

/// Mean per-example loss over a whole split, without gradients (an on-device scalar).
pub fn evaluate_loss(
    split: &Split,
    net: &dyn Fn(&Tensor) -> Tensor,
    loss: &dyn Fn(&Tensor, &Tensor) -> Tensor,
) -> Tensor {
    tch::no_grad(|| loss(&net(&split.x), &split.y).mean(None))
}

/// Correct predictions over a split in batches of `batch_size`, without gradients
/// (an on-device scalar; divide by the split's length for the accuracy).
pub fn count_correct(split: &Split, net: &dyn Fn(&Tensor) -> Tensor, batch_size: usize) -> Tensor {
    tch::no_grad(|| {
        let mut total = Tensor::zeros([], (Kind::Int64, split.x.device()));
        for (x, y) in crate::data::batches::in_order(split, batch_size) {
            total += correct(&net(&x), &y);
        }
        total
    })
}
