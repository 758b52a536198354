//! Book §4.6, *Dropout*, as the book writes it: read it beside the page.
//!
//! An MLP 784-256-256-10 on Fashion-MNIST, with dropout 0.2 after the first hidden layer and
//! 0.5 after the second, active only while training: from scratch (`dropout_layer` and a `Net`
//! that applies it when `train` is true), then concisely (a sequential model whose dropout
//! layers libtorch switches off in evaluation mode), both trained by the book's `train_ch3`,
//! which hands every epoch's figures to an [`Animator`]. The exercises are in `exercises.rs`,
//! the fused engine in `fused/`, the command in `command.rs`.
use crate::d2l::{self, Animator, EpochMetrics, Split};
use crate::nn::init;
use tch::nn::{self, Module, ModuleT, OptimizerConfig};
use tch::{Kind, Reduction, Tensor};

/// `num_inputs, num_outputs, num_hiddens1, num_hiddens2 = 784, 10, 256, 256`.
pub const NUM_INPUTS: i64 = 784;
pub const NUM_OUTPUTS: i64 = 10;
pub const NUM_HIDDENS1: i64 = 256;
pub const NUM_HIDDENS2: i64 = 256;

/// `num_epochs, lr, batch_size = 10, 0.5, 256`, and `dropout1, dropout2 = 0.2, 0.5`
/// ([`Hyper::BOOK`], the flags' defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    pub num_epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub dropout1: f64,
    pub dropout2: f64,
}

impl Hyper {
    pub const BOOK: Hyper = Hyper {
        num_epochs: 10,
        lr: 0.5,
        batch_size: 256,
        dropout1: 0.2,
        dropout2: 0.5,
    };
}

// ---------------------------------------------------------------- §4.6.4 from scratch

/// `dropout_layer(X, dropout)`: each element zeroed with probability `dropout`, the kept ones
/// scaled by 1/(1 − dropout), so the expectation is unchanged. `dropout` lies in [0, 1].
pub fn dropout_layer(x: &Tensor, dropout: f64) -> Tensor {
    assert!(
        (0.0..=1.0).contains(&dropout),
        "dropout probability {dropout} is outside [0, 1]"
    );
    // In this case, all elements are dropped out.
    if dropout == 1.0 {
        return x.zeros_like();
    }
    // In this case, all elements are kept.
    if dropout == 0.0 {
        return x.shallow_clone();
    }
    let mask = Tensor::rand(x.size(), (Kind::Float, x.device()))
        .gt(dropout)
        .to_kind(Kind::Float);
    mask * x / (1.0 - dropout)
}

/// The book's `Net`: three linear layers (PyTorch's `nn.Linear` initialisation), ReLU, and
/// `dropout_layer` after each hidden layer, only while training.
#[derive(Debug)]
pub struct Net {
    lin1: nn::Linear,
    lin2: nn::Linear,
    lin3: nn::Linear,
    dropout1: f64,
    dropout2: f64,
}

impl Net {
    pub fn new(vs: &nn::Path, dropout1: f64, dropout2: f64) -> Net {
        let [lin1, lin2, lin3] = linear_layers(vs, SCRATCH_NAMES);
        Net {
            lin1,
            lin2,
            lin3,
            dropout1,
            dropout2,
        }
    }
}

/// The names of the scratch `Net`'s layers (`self.lin1`, …), and of the concise model's, as
/// PyTorch numbers the modules of its `nn.Sequential`.
pub const SCRATCH_NAMES: [&str; 3] = ["lin1", "lin2", "lin3"];
pub const CONCISE_NAMES: [&str; 3] = ["1", "4", "7"];

/// `nn.Linear(784, 256)`, `nn.Linear(256, 256)`, `nn.Linear(256, 10)` under `names`, drawn in
/// that order (PyTorch's `nn.Linear` initialisation).
pub fn linear_layers(vs: &nn::Path, names: [&str; 3]) -> [nn::Linear; 3] {
    [
        init::linear(&(vs / names[0]), NUM_INPUTS, NUM_HIDDENS1),
        init::linear(&(vs / names[1]), NUM_HIDDENS1, NUM_HIDDENS2),
        init::linear(&(vs / names[2]), NUM_HIDDENS2, NUM_OUTPUTS),
    ]
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let h1 = self.lin1.forward(&x.reshape([-1, NUM_INPUTS])).relu();
        // Use dropout only when training the model.
        let h1 = if train {
            dropout_layer(&h1, self.dropout1)
        } else {
            h1
        };
        let h2 = self.lin2.forward(&h1).relu();
        let h2 = if train {
            dropout_layer(&h2, self.dropout2)
        } else {
            h2
        };
        self.lin3.forward(&h2)
    }
}

/// Training (§4.6.4 and §4.6.5 alike): `loss = nn.CrossEntropyLoss(reduction='none')`,
/// `trainer = torch.optim.SGD(net.parameters(), lr=lr)`, then
/// `d2l.train_ch3(net, train_iter, test_iter, loss, num_epochs, trainer)`.
pub fn train(
    net: &dyn ModuleT,
    vs: &nn::VarStore,
    hp: &Hyper,
    (train, test): (&Split, &Split),
    animator: Animator<EpochMetrics>,
) {
    let mut trainer = nn::Sgd::default()
        .build(vs, hp.lr)
        .expect("SGD over a VarStore");
    d2l::train_ch3(
        net,
        (train, test),
        hp.batch_size,
        loss,
        hp.num_epochs,
        &mut trainer,
        animator,
    );
}

/// `nn.CrossEntropyLoss(reduction='none')`.
pub fn loss(y_hat: &Tensor, y: &Tensor) -> Tensor {
    y_hat.cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)
}

// ---------------------------------------------------------------- §4.6.5 concise

/// `nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(dropout1),
/// nn.Linear(256, 256), nn.ReLU(), nn.Dropout(dropout2), nn.Linear(256, 10))`, the linear
/// layers under the names PyTorch gives them (`1`, `4`, `7`), then `net.apply(init_weights)`:
/// every linear layer's weight re-drawn from N(0, 0.01) (done before the layers move into the
/// sequence, in the same order).
pub fn concise_net(vs: &nn::Path, dropout1: f64, dropout2: f64) -> nn::SequentialT {
    let [lin1, lin2, lin3] = concise_layers(vs);
    nn::seq_t()
        .add_fn(|x| x.flatten(1, -1))
        .add(lin1)
        .add_fn(|x| x.relu())
        // Add a dropout layer after the first fully connected layer.
        .add_fn_t(move |x, train| x.dropout(dropout1, train))
        .add(lin2)
        .add_fn(|x| x.relu())
        // Add a dropout layer after the second fully connected layer.
        .add_fn_t(move |x, train| x.dropout(dropout2, train))
        .add(lin3)
}

/// The concise model's three linear layers, named `1`, `4`, `7`, with `init_weights` applied.
pub fn concise_layers(vs: &nn::Path) -> [nn::Linear; 3] {
    let layers = linear_layers(vs, CONCISE_NAMES);
    for layer in &layers {
        init_weights(layer);
    }
    layers
}

/// `init_weights(m)`: `nn.init.normal_(m.weight, std=0.01)`.
pub fn init_weights(m: &nn::Linear) {
    tch::no_grad(|| {
        let _ = m.ws.shallow_clone().normal_(0.0, 0.01);
    });
}
