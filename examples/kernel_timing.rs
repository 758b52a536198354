//! Times the fused engine's CPU kernels and the GEMMs of one dropout step, one by one.
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
    let d = vec![0.5f32; 256 * 256];
    let mut bias = vec![0.0f32; 256];
    time("relu_dropout_backward 256x256", 2000, || {
        kernels::relu_dropout_backward(&mut z, &d, 2.0, &mut bias)
    });
    // bf16-mixed (fused/bf16.rs): the conversions and the SGD step, and a bf16 GEMM.
    let h = vec![0x3f00u16; 256 * 256];
    let mut f = vec![0f32; 256 * 256];
    time("widen_all 256x256 (bf16 → f32)", 2000, || {
        kernels::widen_all(&h, &mut f)
    });
    let mut h2 = vec![0u16; 256 * 256];
    time("narrow_all 256x256 (f32 → bf16)", 2000, || {
        kernels::narrow_all(&f, &mut h2)
    });
    let mut w = vec![0.1f32; 256 * 784];
    let g = vec![0x3c00u16; 256 * 784];
    let mut wh = vec![0u16; 256 * 784];
    time("sgd_step_bf16 256x784", 1000, || {
        kernels::sgd_step_bf16(&mut w, &g, 1.0, &mut wh)
    });
    let bf = (Kind::BFloat16, Device::Cpu);
    let (a, bm, c) = (
        Tensor::rand([256, 784], bf),
        Tensor::rand([256, 784], bf),
        Tensor::empty([256, 256], bf),
    );
    time("bf16 mm_out x·W1ᵀ (256x784x256)", 500, || {
        let _ = a.mm_out(&c, &bm.tr());
    });
    let gw = Tensor::empty([256, 784], bf);
    time("bf16 mm_out gᵀ·x (256x256x784)", 500, || {
        let _ = c.tr().mm_out(&gw, &a);
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
