//! Book §4.5, *Weight Decay*, as the book writes it: read it beside the page.
//!
//! A linear model with 200 inputs and only 20 training examples overfits; adding λ‖w‖²/2 to the
//! loss (from scratch), or letting the optimizer decay the weight (concisely), keeps ‖w‖ small
//! and the test loss low. Each training function hands every epoch's losses to an
//! [`Animator`], the book's plot, which the caller may use to stop it. The model it trains is
//! built by the book's own functions ([`init_params`], [`concise_net`], [`trainer`]) and handed
//! in (the caller may set a resumed run's to its checkpoint first). The exercises are in
//! `exercises.rs`, the fused engine in `fused.rs`, the command in `command.rs`.
use crate::d2l::{self, Animator, Split};
use crate::nn::{decay, init};
use tch::nn::{self, Module};
use tch::{Device, Kind, Reduction, Tensor};

// ---------------------------------------------------------------- §4.5.1 the data

/// The book's hyper-parameters: `n_train, n_test, num_inputs, batch_size = 20, 100, 200, 5`,
/// and the training loop's `num_epochs, lr = 100, 0.003` ([`Hyper::BOOK`], the flags' defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    pub n_train: usize,
    pub n_test: usize,
    pub num_inputs: usize,
    pub batch_size: usize,
    pub num_epochs: usize,
    pub lr: f64,
}

impl Hyper {
    pub const BOOK: Hyper = Hyper {
        n_train: 20,
        n_test: 100,
        num_inputs: 200,
        batch_size: 5,
        num_epochs: 100,
        lr: 0.003,
    };
}

/// `true_w, true_b = torch.ones((num_inputs, 1)) * 0.01, 0.05`.
pub fn true_params(num_inputs: usize, device: Device) -> (Tensor, f64) {
    (
        Tensor::ones([num_inputs as i64, 1], (Kind::Float, device)) * 0.01,
        0.05,
    )
}

/// y = 0.05 + Σᵢ 0.01·xᵢ + ε, ε ~ N(0, 0.01²): the training set drawn first, then the test set.
pub struct Data {
    pub train: Split,
    pub test: Split,
}

impl Data {
    pub fn new(hp: &Hyper, device: Device) -> Data {
        let (true_w, true_b) = true_params(hp.num_inputs, device);
        let train = d2l::synthetic_data(&true_w, true_b, hp.n_train);
        let test = d2l::synthetic_data(&true_w, true_b, hp.n_test);
        Data { train, test }
    }
}

// ---------------------------------------------------------------- §4.5.2 from scratch

/// `init_params`: w ~ N(0, 1) of shape `[num_inputs, 1]`, b = 0, both requiring gradients.
pub fn init_params(num_inputs: usize, device: Device) -> (Tensor, Tensor) {
    let w = Tensor::empty([num_inputs as i64, 1], (Kind::Float, device))
        .normal_(0.0, 1.0)
        .set_requires_grad(true);
    let b = Tensor::zeros([1], (Kind::Float, device)).set_requires_grad(true);
    (w, b)
}

/// `l2_penalty`: ‖w‖² / 2.
pub fn l2_penalty(w: &Tensor) -> Tensor {
    w.pow_tensor_scalar(2).sum(None) / 2
}

/// The book's `train(lambd)`: minibatch SGD on the squared loss plus λ·‖w‖²/2, for
/// `hp.num_epochs` epochs. Its first line, `w, b = init_params()`, is the caller's
/// ([`init_params`]), which hands the parameters in; the book then prints ‖w‖.
pub fn train(
    lambd: f64,
    (w, b): (&Tensor, &Tensor),
    hp: &Hyper,
    data: &Data,
    animator: Animator<[Tensor; 2]>,
) {
    let net = |x: &Tensor| d2l::linreg(x, w, b);
    let loss = d2l::squared_loss;
    for epoch in 1..=hp.num_epochs {
        for (x, y) in d2l::load_array(&data.train, hp.batch_size) {
            // The L2 penalty is added to every example's loss (it broadcasts).
            let l = loss(&net(&x), &y) + l2_penalty(w) * lambd;
            l.sum(None).backward();
            d2l::sgd(&[w, b], hp.lr, hp.batch_size);
        }
        let losses = [
            d2l::evaluate_loss(net, &data.train, loss),
            d2l::evaluate_loss(net, &data.test, loss),
        ];
        if animator.add(epoch, losses).is_break() {
            break;
        }
    }
}

// ---------------------------------------------------------------- §4.5.3 concise

/// `nn.Sequential(nn.Linear(num_inputs, 1))` with every parameter re-drawn from N(0, 1)
/// (`param.data.normal_()`).
pub fn concise_net(vs: &nn::Path, num_inputs: usize) -> nn::Linear {
    let net = init::linear(vs, num_inputs as i64, 1);
    tch::no_grad(|| {
        for param in [&net.ws, net.bs.as_ref().expect("a bias")] {
            let _ = param.shallow_clone().normal_(0.0, 1.0);
        }
    });
    net
}

/// `trainer = torch.optim.SGD([{"params": net[0].weight, 'weight_decay': wd},
/// {"params": net[0].bias}], lr=lr)`: the weight decays by `wd`, the bias does not.
pub fn trainer(vs: &nn::VarStore, wd: f64, lr: f64) -> nn::Optimizer {
    // The weight goes to the decay group, the bias to the other.
    decay::regroup(vs);
    decay::optimizer(nn::Sgd::default(), vs, lr, wd).expect("SGD over a fresh VarStore")
}

/// The book's `train_concise(wd)`: the MSE and the `trainer` above, for `hp.num_epochs`
/// epochs. Its first lines (`net = nn.Sequential(…)`, the `normal_()` of its parameters and
/// the trainer) are the caller's ([`concise_net`], [`trainer`]); the book then prints ‖w‖.
pub fn train_concise(
    net: &nn::Linear,
    trainer: &mut nn::Optimizer,
    hp: &Hyper,
    data: &Data,
    animator: Animator<[Tensor; 2]>,
) {
    let loss = |y_hat: &Tensor, y: &Tensor| y_hat.mse_loss(y, Reduction::None);
    for epoch in 1..=hp.num_epochs {
        for (x, y) in d2l::load_array(&data.train, hp.batch_size) {
            trainer.zero_grad();
            let l = loss(&net.forward(&x), &y);
            l.mean(None).backward();
            trainer.step();
        }
        let losses = [
            d2l::evaluate_loss(|x| net.forward(x), &data.train, loss),
            d2l::evaluate_loss(|x| net.forward(x), &data.test, loss),
        ];
        if animator.add(epoch, losses).is_break() {
            break;
        }
    }
}
