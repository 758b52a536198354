//! Times the fused engine's CPU kernels and the GEMMs of one dropout step, one by one.
use d2l_regularization::cpu::gemm;
use d2l_regularization::experiments::dropout::kernels::{self, Rng};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn time<F: FnMut()>(name: &str, reps: usize, mut f: F) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let per = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{name:40} {:8.1} µs/call  {:6.1} ms/epoch (×235)",
        per * 1e6,
        per * 235e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "layouts") {
        return layouts();
    }
    let opts = (Kind::Float, Device::Cpu);
    let mut rng = Rng::new(1);
    let mut z = vec![0.5f32; 256 * 256];
    let bias = vec![0.1f32; 256];
    time("bias_relu_dropout 256x256", 2000, || {
        kernels::bias_relu_dropout(&mut z, &bias, 0.5, &mut rng)
    });
    // Tensors' memory, 64-byte aligned as the engine's buffers are (threads split it by
    // columns); a scale of 1 keeps the numbers as they are from call to call.
    let (g, d, bias) = (
        Tensor::rand([256, 256], opts),
        Tensor::rand([256, 256], opts) - 0.5,
        Tensor::zeros([256], opts),
    );
    // SAFETY: three distinct contiguous f32 CPU tensors, alive while the slices are used.
    let (g, d, bias) = unsafe {
        (
            kernels::as_slice_mut(&g),
            kernels::as_slice_mut(&d),
            kernels::as_slice_mut(&bias),
        )
    };
    time("relu_dropout_backward 256x256", 2000, || {
        kernels::relu_dropout_backward(g, d, 1.0, bias)
    });
    // bf16-mixed (fused/bf16.rs): the conversion, and the hidden layers' GEMMs with bf16
    // operands and f32 results as the step calls them.
    let f = vec![0.25f32; 256 * 784];
    let mut h = vec![0u16; 256 * 784];
    time("narrow_all 256x784 (f32 → bf16)", 2000, || {
        kernels::narrow_all(&f, &mut h)
    });
    let bf = (Kind::BFloat16, Device::Cpu);
    let (xh, w1h, w2h, gh) = (
        Tensor::rand([256, 784], bf),
        Tensor::rand([256, 784], bf),
        Tensor::rand([256, 256], bf),
        Tensor::rand([256, 256], bf),
    );
    let (z, w1f, w2f) = (
        Tensor::empty([256, 256], opts),
        Tensor::rand([256, 784], opts),
        Tensor::rand([256, 256], opts),
    );
    time("bf16→f32 x·W1ᵀ (256x784x256)", 500, || {
        gemm(&xh, &w1h.tr(), 0.0, &z)
    });
    time("bf16→f32 h·W2ᵀ (256x256x256)", 500, || {
        gemm(&gh, &w2h.tr(), 0.0, &z)
    });
    time("bf16→f32 g·W2 (256x256x256)", 500, || {
        gemm(&gh, &w2h, 0.0, &z)
    });
    time("bf16→f32 W2 ← W2 + gᵀ·h (256x256x256)", 500, || {
        gemm(&gh.tr(), &gh, 1.0, &w2f)
    });
    time("bf16→f32 W1 ← W1 + gᵀ·x (256x256x784)", 500, || {
        gemm(&gh.tr(), &xh, 1.0, &w1f)
    });
    // The output layer (f32 in both precisions), its GEMMs through MKL straight.
    let (h2, w3, z3, dd) = (
        Tensor::rand([256, 256], opts),
        Tensor::rand([10, 256], opts),
        Tensor::rand([256, 10], opts),
        Tensor::empty([256, 256], opts),
    );
    time("f32 h2·W3ᵀ (256x256x10)", 2000, || {
        gemm(&h2, &w3.tr(), 0.0, &z3)
    });
    time("f32 g3·W3 (256x10x256)", 2000, || gemm(&z3, &w3, 0.0, &dd));
    time("f32 W3 ← W3 + g3ᵀ·h2 (10x256x256)", 2000, || {
        gemm(&z3.tr(), &h2, 1.0, &w3)
    });
    let y: Vec<i64> = (0..256).map(|i| i % 10).collect();
    let mut logits = vec![0.1f32; 256 * 10];
    time("bias_softmax_cross_entropy 256x10", 2000, || {
        logits.fill(0.1);
        kernels::bias_softmax_cross_entropy(&mut logits, &[0.0; 10], &y, -0.002);
    });
    let x = Tensor::rand([60000, 784], opts);
    let idx = Tensor::randperm(60000, (Kind::Int64, Device::Cpu)).narrow(0, 0, 256);
    let xb = Tensor::empty([256, 784], opts);
    time("index_select_out 256 rows of 784", 500, || {
        let _ = x.index_select_out(&xb, 0, &idx);
    });
    let w1 = Tensor::rand([256, 784], opts);
    let w2 = Tensor::rand([256, 256], opts);
    let b = Tensor::rand([256], opts);
    let z1 = Tensor::empty([256, 256], opts);
    time("addmm_out x·W1ᵀ (256x784x256)", 500, || {
        let _ = b.addmm_out(&z1, &xb, &w1.tr());
    });
    time("W1.addmm_(gᵀ, x) (256x256x784)", 500, || {
        let _ = w1.shallow_clone().addmm_(&z1.tr(), &xb);
    });
    time("addmm_out h·W2ᵀ (256x256x256)", 500, || {
        let _ = b.addmm_out(&z1, &z1.copy(), &w2.tr());
    });
    let dd = Tensor::empty([256, 256], opts);
    time("mm_out g·W2 (256x256x256)", 500, || {
        let _ = z1.mm_out(&dd, &w2);
    });
    time("W2.addmm_(gᵀ, h) (256x256x256)", 500, || {
        let _ = w2.shallow_clone().addmm_(&z1.tr(), &dd);
    });
}

#[allow(dead_code)]
fn layouts() {
    let opts = (Kind::Float, Device::Cpu);
    let xb = Tensor::rand([256, 784], opts);
    let w1 = Tensor::rand([256, 784], opts);
    let w1t = w1.tr().contiguous();
    let b = Tensor::rand([256], opts);
    let z1 = Tensor::empty([256, 256], opts);
    time("NT: addmm_out x·W1ᵀ, W1 [256,784]", 500, || {
        let _ = b.addmm_out(&z1, &xb, &w1.tr());
    });
    time("NN: addmm_out x·M, M [784,256]", 500, || {
        let _ = b.addmm_out(&z1, &xb, &w1t);
    });
    time("TN: W1.addmm_(gᵀ, x)", 500, || {
        let _ = w1.shallow_clone().addmm_(&z1.tr(), &xb);
    });
    time("TN: M.addmm_(xᵀ, g)", 500, || {
        let _ = w1t.shallow_clone().addmm_(&xb.tr(), &z1);
    });
}
