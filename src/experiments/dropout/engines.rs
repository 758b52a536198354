//! Which code trains a run: the autograd engine runs the book's code (`book.rs`, or its
//! exercise variant from `exercises.rs`), the fused engine its own model (`fused.rs`). Chosen
//! here, outside the book's code.
use super::book;
use super::exercises;
use super::fused::FusedMlp;
use super::noise::Perturbation;
use super::{Config, Setting};
use crate::d2l::{self, Animator, EpochMetrics, Updater};
use crate::data::Split;
use crate::experiment::Context;
use crate::options::{Engine, Impl};
use crate::precision;
use crate::train::Learner;
use tch::nn::{self as tnn, ModuleT, OptimizerConfig};
use tch::Tensor;

/// The autograd engine's model of `version` at `setting`, in `vs` (the generator seeded by the
/// caller): the book's networks for its dropout, the exercises' for another noise; under
/// autocast with `--precision bf16-mixed`.
pub fn autograd_net(
    cfg: &Config,
    version: Impl,
    setting: Setting,
    vs: &tnn::VarStore,
) -> Box<dyn ModuleT> {
    let noise = cfg.perturbation(setting);
    let [p1, p2] = setting.rates;
    let net: Box<dyn ModuleT> = match (version, noise == Perturbation::dropout(setting.rates)) {
        (Impl::Scratch, true) => Box::new(book::Net::new(&vs.root(), p1, p2)),
        (Impl::Concise, true) => Box::new(book::concise_net(&vs.root(), p1, p2)),
        (Impl::Scratch, false) => Box::new(exercises::NoisyNet::new(&vs.root(), noise)),
        (Impl::Concise, false) => Box::new(exercises::NoisyConciseNet::new(&vs.root(), noise)),
    };
    precision::autocasted(net, cfg.precision, vs.device())
}

/// Trains `net` (in `vs`) with autograd: the book's training, or the exercise's with weight
/// decay when `setting` has some.
#[allow(clippy::too_many_arguments)]
pub fn train_autograd(
    cfg: &Config,
    version: Impl,
    setting: Setting,
    net: &dyn ModuleT,
    vs: &tnn::VarStore,
    data: (&Split, &Split),
    animator: Animator<EpochMetrics>,
) {
    let hp = cfg.hyper(setting);
    if setting.wd > 0.0 {
        let concise = version == Impl::Concise;
        exercises::train_with_decay(net, vs, concise, setting.wd, &hp, data, animator);
    } else {
        book::train(net, vs, &hp, data, animator);
    }
}

/// The book's scratch `Net`'s three layers as `Net::new` draws them (for the fused engine).
pub fn scratch_layers(vs: &tnn::Path) -> [tnn::Linear; 3] {
    book::linear_layers(vs, book::SCRATCH_NAMES)
}

/// A model of `version` at `setting` with its updater, one epoch at a time, for either engine
/// (the benchmark and the engine tests drive it; the command trains through the book's loop).
/// Seeds the generator first. Returns the variables too.
pub fn learner(
    cfg: &Config,
    version: Impl,
    setting: Setting,
    ctx: &Context,
) -> (tnn::VarStore, Box<dyn Learner>) {
    tch::manual_seed(ctx.seed);
    let vs = tnn::VarStore::new(ctx.device);
    let learner: Box<dyn Learner> = match cfg.engine {
        Engine::Autograd => {
            let net = autograd_net(cfg, version, setting, &vs);
            let updater: Box<dyn Updater> = if setting.wd > 0.0 {
                exercises::sgd_with_decay(&vs, version == Impl::Concise, setting.wd, cfg.lr)
            } else {
                Box::new(
                    tnn::Sgd::default()
                        .build(&vs, cfg.lr)
                        .expect("SGD over a VarStore"),
                )
            };
            Box::new(AutogradLearner {
                net,
                updater,
                batch_size: cfg.batch_size,
            })
        }
        Engine::Fused => Box::new(fused_learner(cfg, version, setting, &vs, ctx)),
    };
    (vs, learner)
}

/// The fused engine's model of `version` at `setting`, in `vs`.
pub(super) fn fused_learner(
    cfg: &Config,
    version: Impl,
    setting: Setting,
    vs: &tnn::VarStore,
    ctx: &Context,
) -> FusedMlp {
    let layers = match version {
        Impl::Scratch => scratch_layers(&vs.root()),
        Impl::Concise => book::concise_layers(&vs.root()),
    };
    // Refused earlier (`Config::cuda_graphs` in `prepare`) where `on` is impossible.
    let graphs = cfg.cuda_graphs(ctx.device).unwrap_or(false);
    FusedMlp::new(&layers, setting.rates, cfg.lr, cfg.batch_size)
        .with_weight_decay(setting.wd)
        .with_cuda_graph(graphs)
        .with_precision(cfg.precision)
}

/// A model with its updater, trained op by op with autograd through the book's
/// `train_epoch_ch3`.
struct AutogradLearner {
    net: Box<dyn ModuleT>,
    updater: Box<dyn Updater>,
    batch_size: usize,
}

impl Learner for AutogradLearner {
    fn train_epoch(&mut self, train: &Split) -> d2l::Metrics {
        d2l::train_epoch_ch3(
            self.net.as_ref(),
            train,
            self.batch_size,
            book::loss,
            self.updater.as_mut(),
        )
    }

    fn count_correct(&self, split: &Split) -> Tensor {
        d2l::evaluate_accuracy(self.net.as_ref(), split, self.batch_size)
    }
}
