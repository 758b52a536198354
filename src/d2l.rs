//! The helpers the book imports from its `d2l` package (`d2l/torch.py`), in Rust: what each
//! section's `book.rs` calls, and nothing of the command line. Where the book draws a curve
//! with `d2l.Animator`, the caller passes an [`Animator`]: it receives each epoch's values (on
//! the device) and may answer "stop" — that is where progress lines, records, Ctrl-C and
//! divergence live, outside the book's code.
use crate::data::batches;
use std::ops::ControlFlow;
use tch::nn::{ModuleT, Optimizer};
use tch::{Kind, Tensor};

pub use crate::data::synthetic::synthetic_data;
pub use crate::data::Split;

/// `animator.add(epoch, values)`: gets every epoch's values, answers `Break` to stop training.
/// Any closure `FnMut(usize, V) -> ControlFlow<()>` is one.
pub type Animator<'a, V> = &'a mut dyn Animate<V>;

/// What a training function shows its [`Animator`].
pub trait Animate<V> {
    /// After each epoch, its values; `Break` stops training.
    fn add(&mut self, epoch: usize, values: V) -> ControlFlow<()>;
}

impl<V, F: FnMut(usize, V) -> ControlFlow<()>> Animate<V> for F {
    fn add(&mut self, epoch: usize, values: V) -> ControlFlow<()> {
        self(epoch, values)
    }
}

/// `d2l.load_array(data, batch_size, is_train=True)`: mini-batches in a fresh random order
/// (one permutation drawn on the data's device), the last partial batch kept. A requested stop
/// (Ctrl-C) ends it at the next batch, and the caller's [`Animator`] drops the epoch.
pub fn load_array(split: &Split, batch_size: usize) -> impl Iterator<Item = (Tensor, Tensor)> + '_ {
    batches::shuffled(split, batch_size).take_while(|_| crate::stop::requested().is_none())
}

/// `d2l.linreg`: Xw + b.
pub fn linreg(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    x.matmul(w) + b
}

/// `d2l.squared_loss`, per example: (ŷ − y)² / 2.
pub fn squared_loss(y_hat: &Tensor, y: &Tensor) -> Tensor {
    (y_hat - y.reshape(y_hat.size())).pow_tensor_scalar(2) / 2
}

/// `d2l.sgd`: after `l.sum().backward()`, outside autograd, p −= lr · p.grad / batch_size
/// (the nominal batch size, as the book divides by it), and the gradient is zeroed.
pub fn sgd(params: &[&Tensor], lr: f64, batch_size: usize) {
    tch::no_grad(|| {
        for p in params {
            let mut grad = p.grad();
            let _ = p.shallow_clone().g_sub_(&(&grad * lr / batch_size as f64));
            let _ = grad.zero_();
        }
    });
}

/// `d2l.evaluate_loss`: the mean per-example loss over a whole split, without gradients (an
/// on-device scalar).
pub fn evaluate_loss(
    net: impl Fn(&Tensor) -> Tensor,
    split: &Split,
    loss: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> Tensor {
    tch::no_grad(|| loss(&net(&split.x), &split.y).mean(None))
}

/// `d2l.accuracy`: the number of rows whose arg-max is the label (an on-device scalar).
pub fn accuracy(y_hat: &Tensor, y: &Tensor) -> Tensor {
    y_hat.argmax(1, false).eq_tensor(y).sum(Kind::Int64)
}

/// `d2l.evaluate_accuracy`, as a count: correct predictions over a split in evaluation mode,
/// in batches of `batch_size`, without gradients (divide by the split's length).
pub fn evaluate_accuracy(net: &dyn ModuleT, split: &Split, batch_size: usize) -> Tensor {
    tch::no_grad(|| {
        let mut total = Tensor::zeros([], (Kind::Int64, split.x.device()));
        for (x, y) in batches::in_order(split, batch_size) {
            total += accuracy(&net.forward_t(&x, false), &y);
        }
        total
    })
}

/// What `train_epoch_ch3` updates with: a `torch.optim` optimizer (zero the gradients, backward
/// of the mean loss, step) or the book's own updater (anything else: it does the backward).
pub trait Updater {
    fn update(&mut self, losses: &Tensor);
}

impl Updater for Optimizer {
    fn update(&mut self, losses: &Tensor) {
        self.zero_grad();
        losses.mean(None).backward();
        self.step();
    }
}

/// `train_epoch_ch3`'s `Accumulator(3)`: the summed loss, the correct predictions and the
/// examples of one epoch, kept on the device and read once when the epoch ends.
pub struct Metrics {
    pub loss_sum: Tensor,
    pub correct: Tensor,
    pub count: i64,
}

impl Metrics {
    pub fn new(device: tch::Device) -> Metrics {
        Metrics {
            loss_sum: Tensor::zeros([], (Kind::Double, device)),
            correct: Tensor::zeros([], (Kind::Int64, device)),
            count: 0,
        }
    }

    /// Adds a batch's per-example losses and correct predictions.
    pub fn add(&mut self, losses: &Tensor, y_hat: &Tensor, y: &Tensor) {
        let _ = self.loss_sum.g_add_(&losses.detach().sum(Kind::Double));
        let _ = self.correct.g_add_(&accuracy(y_hat, y));
        self.count += y.size()[0];
    }
}

/// `d2l.train_epoch_ch3`: one pass over shuffled batches in training mode, the per-example
/// losses handed to `updater`, the metrics summed on the device.
pub fn train_epoch_ch3(
    net: &dyn ModuleT,
    train: &Split,
    batch_size: usize,
    loss: impl Fn(&Tensor, &Tensor) -> Tensor,
    updater: &mut dyn Updater,
) -> Metrics {
    let mut metrics = Metrics::new(train.x.device());
    for (x, y) in load_array(train, batch_size) {
        let y_hat = net.forward_t(&x, true);
        let l = loss(&y_hat, &y);
        updater.update(&l);
        metrics.add(&l, &y_hat, &y);
    }
    metrics
}

/// What `train_ch3` passes its animator after each epoch: the training metrics and the number
/// of correct test predictions (on the device).
pub struct EpochMetrics {
    pub train: Metrics,
    pub test_correct: Tensor,
}

/// `d2l.train_ch3`: `num_epochs` epochs of [`train_epoch_ch3`], each followed by the test
/// accuracy (evaluation mode) and `animator.add`, which may stop it.
#[allow(clippy::too_many_arguments)]
pub fn train_ch3(
    net: &dyn ModuleT,
    (train, test): (&Split, &Split),
    batch_size: usize,
    loss: impl Fn(&Tensor, &Tensor) -> Tensor,
    num_epochs: usize,
    updater: &mut dyn Updater,
    animator: Animator<EpochMetrics>,
) {
    for epoch in 1..=num_epochs {
        let train_metrics = train_epoch_ch3(net, train, batch_size, &loss, updater);
        let test_correct = evaluate_accuracy(net, test, batch_size);
        let metrics = EpochMetrics {
            train: train_metrics,
            test_correct,
        };
        if animator.add(epoch, metrics).is_break() {
            break;
        }
    }
}
