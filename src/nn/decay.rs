//! Weight decay on the weights and not on the biases, for any `tch` model.
//!
//! The book's concise weight decay (§4.5.3) builds its optimizer from two parameter groups: the
//! weight with `weight_decay`, the bias without. `tch` has parameter groups too — every variable
//! of a [`VarStore`] carries a group number, and an optimizer can set a weight decay per group —
//! but a stock layer (`nn::linear`, `nn::layer_norm`, `nn::embedding`, …) puts every variable,
//! biases included, in the group of the path it was created under, group 0 unless you said
//! otherwise; and an optimizer config's own default decay (`nn::AdamW`: 0.01) is copied into
//! every group.
//!
//! This module fixes both, for a model built any way at all:
//!
//! - [`NO_DECAY_GROUP`] is group 0, the group every `tch` path starts in, so a variable nobody
//!   placed never decays by accident; [`DECAY_GROUP`] is group 1.
//! - [`regroup`] moves, after the model is built, every trainable variable with two or more
//!   dimensions (weight matrices, embeddings, convolution kernels) into [`DECAY_GROUP`] and every
//!   other one (biases, normalisation scales and shifts) into [`NO_DECAY_GROUP`];
//!   [`regroup_by`] takes your own rule.
//! - [`optimizer`] builds any optimizer and sets the decay of **both** groups: λ for
//!   [`DECAY_GROUP`], 0 for [`NO_DECAY_GROUP`], whatever the config's default.
//!
//! ```
//! use d2l_regularization::nn::decay;
//! use tch::nn::{self, Module};
//!
//! let vs = nn::VarStore::new(tch::Device::Cpu);
//! let root = vs.root();
//! let model = nn::seq()
//!     .add(nn::linear(&root / "fc1", 4, 8, Default::default()))
//!     .add(nn::layer_norm(&root / "norm", vec![8], Default::default()))
//!     .add(nn::linear(&root / "fc2", 8, 2, Default::default()));
//!
//! let groups = decay::regroup(&vs);
//! assert_eq!(groups.decay, ["fc1.weight", "fc2.weight"]);
//! assert_eq!(groups.no_decay, ["fc1.bias", "fc2.bias", "norm.bias", "norm.weight"]);
//!
//! // AdamW decays by 0.01 by default; here the weights decay by 0.1 and the rest not at all.
//! let mut opt = decay::optimizer(nn::AdamW::default(), &vs, 1e-3, 0.1)?;
//! let x = tch::Tensor::ones([3, 4], (tch::Kind::Float, tch::Device::Cpu));
//! opt.backward_step(&model.forward(&x).square().mean(None));
//! # Ok::<(), anyhow::Error>(())
//! ```
use anyhow::{Context as _, Result};
use tch::nn::{Optimizer, OptimizerConfig, VarStore};
use tch::Tensor;

/// The optimizer group of the variables that do not decay: 0, where `tch` puts every variable
/// that was not given a group.
pub const NO_DECAY_GROUP: usize = 0;

/// The optimizer group of the variables that decay.
pub const DECAY_GROUP: usize = 1;

/// The names of the trainable variables in each group after [`regroup`] or [`regroup_by`],
/// sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    pub decay: Vec<String>,
    pub no_decay: Vec<String>,
}

/// The default rule: a variable with two or more dimensions (a weight matrix, an embedding, a
/// convolution kernel) decays; one with fewer (a bias, a normalisation scale or shift) does not.
pub fn decays_by_default(_name: &str, tensor: &Tensor) -> bool {
    tensor.dim() >= 2
}

/// Puts every trainable variable of `vs` with two or more dimensions in [`DECAY_GROUP`] and
/// every other one in [`NO_DECAY_GROUP`] (the rule [`decays_by_default`]). Call it after the
/// model is built and before the optimizer is: an optimizer takes the groups as they are when
/// it is built.
///
/// ```
/// use d2l_regularization::nn::decay;
/// use tch::nn;
///
/// let vs = nn::VarStore::new(tch::Device::Cpu);
/// let _embedding = nn::embedding(&vs.root() / "emb", 100, 16, Default::default());
/// let _head = nn::linear(&vs.root() / "head", 16, 4, Default::default());
/// let groups = decay::regroup(&vs);
/// assert_eq!(groups.decay, ["emb.weight", "head.weight"]);
/// assert_eq!(groups.no_decay, ["head.bias"]);
/// ```
pub fn regroup(vs: &VarStore) -> Groups {
    regroup_by(vs, decays_by_default)
}

/// [`regroup`] with your own rule: `decays(name, tensor)` says whether a trainable variable
/// goes to [`DECAY_GROUP`] (true) or [`NO_DECAY_GROUP`] (false).
///
/// ```
/// use d2l_regularization::nn::decay;
/// use tch::nn;
///
/// let vs = nn::VarStore::new(tch::Device::Cpu);
/// let _ = nn::linear(&vs.root() / "encoder", 8, 8, Default::default());
/// let _ = nn::linear(&vs.root() / "head", 8, 2, Default::default());
/// // Decay the encoder's weight only.
/// let groups = decay::regroup_by(&vs, |name, t| name.starts_with("encoder.") && t.dim() >= 2);
/// assert_eq!(groups.decay, ["encoder.weight"]);
/// ```
pub fn regroup_by(vs: &VarStore, mut decays: impl FnMut(&str, &Tensor) -> bool) -> Groups {
    let mut variables = vs.variables_.lock().unwrap_or_else(|e| e.into_inner());
    // Names by tensor: the trainable list holds tensors only, the named map their names.
    let names: Vec<(String, usize, Vec<i64>)> = variables
        .named_variables
        .iter()
        .map(|(name, t)| (name.clone(), t.data_ptr() as usize, t.size()))
        .collect();
    let mut groups = Groups::default();
    for var in variables.trainable_variables.iter_mut() {
        let (pointer, size) = (var.tensor.data_ptr() as usize, var.tensor.size());
        let name = names
            .iter()
            .find(|(_, p, s)| *p == pointer && *s == size)
            .map(|(n, _, _)| n.clone())
            .unwrap_or_default();
        if decays(&name, &var.tensor) {
            var.group = DECAY_GROUP;
            groups.decay.push(name);
        } else {
            var.group = NO_DECAY_GROUP;
            groups.no_decay.push(name);
        }
    }
    groups.decay.sort();
    groups.no_decay.sort();
    groups
}

/// The trainable variables of `vs` in [`DECAY_GROUP`]: what a penalty the optimizer cannot
/// apply (an L1 term added to the loss, say) should cover.
pub fn decaying_variables(vs: &VarStore) -> Vec<Tensor> {
    let variables = vs.variables_.lock().unwrap_or_else(|e| e.into_inner());
    variables
        .trainable_variables
        .iter()
        .filter(|v| v.group == DECAY_GROUP)
        .map(|v| v.tensor.shallow_clone())
        .collect()
}

/// Builds `config`'s optimizer over the trainable variables of `vs` with learning rate `lr`,
/// and sets the weight decay of both groups: `weight_decay` for [`DECAY_GROUP`], 0 for
/// [`NO_DECAY_GROUP`], whatever the config's own default. What the decay then does is the
/// optimizer's: SGD and Adam add λ·w to the gradient (coupled), AdamW multiplies w by
/// (1 − lr·λ) before its step (decoupled).
///
/// Variables added to `vs` after this call join the optimizer with the config's defaults, so
/// build the model first. An error (not a panic) if libtorch refuses a setting.
///
/// ```
/// use d2l_regularization::nn::decay;
/// use tch::nn;
///
/// let vs = nn::VarStore::new(tch::Device::Cpu);
/// let _ = nn::linear(&vs.root() / "fc", 3, 1, Default::default());
/// decay::regroup(&vs);
/// let mut sgd = decay::optimizer(nn::Sgd::default(), &vs, 0.03, 3.0)?;
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn optimizer<C: OptimizerConfig>(
    config: C,
    vs: &VarStore,
    lr: f64,
    weight_decay: f64,
) -> Result<Optimizer> {
    let mut opt = config.build(vs, lr).context("cannot build the optimizer")?;
    // The optimizer has a group up to the largest group number in use (lower ones empty).
    let groups = {
        let variables = vs.variables_.lock().unwrap_or_else(|e| e.into_inner());
        variables
            .trainable_variables
            .iter()
            .map(|v| v.group + 1)
            .max()
            .unwrap_or(0)
    };
    for (group, decay) in [(NO_DECAY_GROUP, 0.0), (DECAY_GROUP, weight_decay)] {
        if group < groups {
            set_group_decay(&mut opt, group, decay)?;
        }
    }
    Ok(opt)
}

/// `Optimizer::set_weight_decay_group`, with libtorch's refusal as an error instead of a panic.
fn set_group_decay(opt: &mut Optimizer, group: usize, decay: f64) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        opt.set_weight_decay_group(group, decay)
    }))
    .map_err(|_| anyhow::anyhow!("libtorch refused weight decay {decay} for group {group}"))
}
