//! The fused engine's tensor-operation path (the one a GPU takes): one training step as 35
//! libtorch operators on static buffers, an epoch of them, and its capture and replay as one
//! CUDA graph.
use super::*;

impl FusedMlp {
    /// The same step as tensor operations on any device, the loss and correct predictions
    /// added to the on-device sums in `buffers` in place. Without `host_masks` nothing is read
    /// back to the host, so the step can be captured in a CUDA graph.
    ///
    /// Fewer kernels than the textbook chain (35 working operators per step instead of 46,
    /// counted by `bench`): the activations are kept masked but unscaled (dᵤ = m ⊙ relu(z)) and
    /// each dropout scale s is folded into what already multiplies — the next layer's GEMM
    /// (α = s), the loss gradient's factor and the gradient flowing back (ĝ = s·g); the bias
    /// gradient Σg becomes one GEMV, ĝᵀ·(1/s); the ReLU-and-mask backward is one
    /// `threshold_backward` on dᵤ; the one-hot is subtracted by one `scatter_add_`.
    pub(super) fn tensor_step(
        &self,
        train: &Split,
        index: &Tensor,
        buffers: &EpochBuffers,
        mut host_masks: Option<&mut Rng>,
    ) {
        let (w, b, p) = (&self.w, &self.b, self.p);
        // s: the dropout scales; f: what is folded into the gradients (s, or 1 where p = 1 and
        // the layer's output is 0 anyway).
        let s = p.map(scale);
        let f = s.map(|s| if s > 0.0 { s } else { 1.0 });
        let x = train.x.index_select(0, index);
        let y = train.y.index_select(0, index);
        let y1 = y.unsqueeze(1);
        let n = x.size()[0];
        let mut masked = |z: Tensor, p: f64| {
            let h = z.relu();
            if let Some(rng) = host_masks.as_deref_mut() {
                let (rows, cols) = h.size2().expect("a matrix");
                let mask = kernels::keep_mask(rows as usize, cols as usize, p, rng);
                h * Tensor::from_slice(&mask)
                    .view([rows, cols])
                    .to_device(z.device())
            } else if p > 0.0 {
                // The book's dropout_layer draws rand_like(h) > p: the same draws.
                h * z.rand_like().gt(p)
            } else {
                h
            }
        };
        let d1 = masked(b[0].addmm(&x, &w[0].tr()), p[0]);
        let d2 = masked(scaled_linear(&d1, &w[1], &b[1], s[0]), p[1]);
        let z3 = scaled_linear(&d2, &w[2], &b[2], s[1]);
        let log_p = z3.log_softmax(1, Kind::Float);
        let picked = log_p.gather(1, &y1, false);
        let _ = buffers
            .loss
            .shallow_clone()
            .g_sub_(&picked.sum(Kind::Double));
        let _ = buffers
            .correct
            .shallow_clone()
            .g_add_(&crate::d2l::accuracy(&z3, &y));
        // ĝ3 = f2 · (−lr/n) · (softmax − one_hot(y))
        let mut g3 = log_p.exp();
        let _ = g3.scatter_add_(1, &y1, &buffers.minus_ones.narrow(0, 0, n));
        let g3 = g3 * (f[1] * -self.lr / n as f64);
        let mut g2 = d2.threshold_backward(&g3.mm(&w[2]), 0.0);
        if f[0] != 1.0 {
            g2 *= f[0];
        }
        update(
            &w[2],
            &b[2],
            &g3,
            &d2,
            &buffers.inverse_scale[2].narrow(0, 0, n),
            self.decay,
        );
        let g1 = d1.threshold_backward(&g2.mm(&w[1]), 0.0);
        update(
            &w[1],
            &b[1],
            &g2,
            &d1,
            &buffers.inverse_scale[1].narrow(0, 0, n),
            self.decay,
        );
        update(
            &w[0],
            &b[0],
            &g1,
            &x,
            &buffers.inverse_scale[0].narrow(0, 0, n),
            self.decay,
        );
    }

    /// One epoch of [`FusedMlp::tensor_step`] over the permutation in `buffers.order`: the
    /// sums zeroed, then every batch (the last one partial). With `stoppable` a stop request
    /// ends it at a batch boundary (not inside a graph). Returns the examples seen.
    pub(super) fn tensor_epoch(
        &self,
        train: &Split,
        buffers: &EpochBuffers,
        mut host_masks: Option<&mut Rng>,
        stoppable: bool,
    ) -> i64 {
        let (n, bs) = (train.len(), self.batch_size as i64);
        let _ = buffers.loss.shallow_clone().zero_();
        let _ = buffers.correct.shallow_clone().zero_();
        let mut seen = 0;
        for start in (0..n).step_by(bs as usize) {
            if stoppable && crate::stop::requested().is_some() {
                break;
            }
            let len = bs.min(n - start);
            let index = buffers.order.narrow(0, start, len);
            let rng = host_masks.as_deref_mut();
            self.tensor_step(train, &index, buffers, rng);
            seen += len;
        }
        seen
    }

    /// A training epoch as tensor operations: the permutation drawn into the static order
    /// buffer, then the epoch eagerly, or replayed from its CUDA graph.
    pub(super) fn tensor_ops_epoch(&mut self, train: &Split) -> Metrics {
        let device = train.x.device();
        let n = train.len();
        if self.epoch.as_ref().is_none_or(|e| e.order.size()[0] != n) {
            let bs = self.batch_size as i64;
            let folded = |p: f64| match scale(p) {
                s if s > 0.0 => 1.0 / s,
                _ => 1.0,
            };
            let constant = |v: f64| Tensor::full([bs], v, (Kind::Float, device));
            self.epoch = Some(EpochBuffers {
                order: Tensor::empty([n], (Kind::Int64, device)),
                loss: Tensor::zeros([], (Kind::Double, device)),
                correct: Tensor::zeros([], (Kind::Int64, device)),
                minus_ones: Tensor::full([bs, 1], -1.0, (Kind::Float, device)),
                inverse_scale: [
                    constant(1.0),
                    constant(folded(self.p[0])),
                    constant(folded(self.p[1])),
                ],
                graph: None,
            });
        }
        let mut buffers = self.epoch.take().expect("just made");
        let _ = Tensor::randperm_out(&buffers.order, n);
        let seen = if self.path == StepPath::TensorOpsHostMasks {
            let mut rng = self.rng.clone();
            let seen = self.tensor_epoch(train, &buffers, Some(&mut rng), true);
            self.rng = rng;
            seen
        } else if !self.graphs {
            self.tensor_epoch(train, &buffers, None, true)
        } else if let Some(graph) = &buffers.graph {
            self.replay(graph, train, &buffers)
        } else {
            self.capture(train, &mut buffers)
        };
        let sums = Metrics {
            loss_sum: buffers.loss.copy(),
            correct: buffers.correct.copy(),
            count: seen,
        };
        self.epoch = Some(buffers);
        sums
    }

    /// The first epoch with graphs: run on a side stream (the warm-up CUDA graphs need), then
    /// captured for the epochs that follow. If the capture fails the epoch still counts (or
    /// runs eagerly, if it had not run), a warning says why, and graphs are off from then on.
    pub(super) fn capture(&mut self, train: &Split, buffers: &mut EpochBuffers) -> i64 {
        let device = match train.x.device() {
            Device::Cuda(i) => i,
            _ => unreachable!("graphs are only enabled on CUDA"),
        };
        let seen = std::cell::Cell::new(None);
        let this = &*self;
        let captured = CudaGraph::capture(
            device,
            || seen.set(Some(this.tensor_epoch(train, buffers, None, false))),
            || {
                this.tensor_epoch(train, buffers, None, false);
            },
        );
        match captured {
            Ok(graph) => buffers.graph = Some(graph),
            Err(e) => {
                crate::errln!("warning: CUDA graph capture failed, training without graphs: {e:#}");
                self.graphs = false;
            }
        }
        match seen.get() {
            Some(seen) => seen,
            None => self.tensor_epoch(train, buffers, None, true),
        }
    }

    /// A whole epoch from the captured graph; a replay that fails is reported and the epoch
    /// runs eagerly instead (graphs off from then on).
    pub(super) fn replay(&self, graph: &CudaGraph, train: &Split, buffers: &EpochBuffers) -> i64 {
        match graph.replay() {
            Ok(()) => train.len(),
            Err(e) => {
                crate::errln!("warning: CUDA graph replay failed, training without graphs: {e:#}");
                self.tensor_epoch(train, buffers, None, true)
            }
        }
    }
}

/// W ← factor·W (SGD's weight decay), nothing when the factor is 1.
pub(super) fn decay(w: &Tensor, factor: f64) {
    if factor != 1.0 {
        let _ = w.shallow_clone().g_mul_scalar_(factor);
    }
}

/// b + α·(d·Wᵀ): a layer whose input d is unscaled by α (one GEMM either way).
pub(super) fn scaled_linear(d: &Tensor, w: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    if alpha == 1.0 {
        b.addmm(d, &w.tr())
    } else {
        b.baddbmm(&d.unsqueeze(0), &w.tr().unsqueeze(0), 1.0, alpha)
            .squeeze_dim(0)
    }
}

/// W += ĝᵀ·input and b += ĝᵀ·v, where ĝ carries −lr and the folded scale 1/v (one GEMM and
/// one GEMV).
pub(super) fn update(w: &Tensor, b: &Tensor, g: &Tensor, input: &Tensor, v: &Tensor, factor: f64) {
    decay(w, factor);
    let _ = w.shallow_clone().addmm_(&g.tr(), input);
    let _ = b.shallow_clone().addmv_(&g.tr(), v);
}
