//! Times the eight GEMMs of one dropout step (batch 256, 784-256-256-10) in f32 and bf16.
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn time<F: FnMut()>(name: &str, reps: usize, mut f: F) -> f64 {
    for _ in 0..20 {
        f();
    }
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let per = t.elapsed().as_secs_f64() / reps as f64;
    println!("{name:44} {:8.1} µs", per * 1e6);
    per
}

fn main() {
    for kind in [Kind::Float, Kind::BFloat16] {
        let o = (kind, Device::Cpu);
        let x = Tensor::rand([256, 784], o);
        let w1 = Tensor::rand([256, 784], o);
        let w2 = Tensor::rand([256, 256], o);
        let w3 = Tensor::rand([10, 256], o);
        let z1 = Tensor::rand([256, 256], o);
        let z2 = Tensor::rand([256, 256], o);
        let z3 = Tensor::rand([256, 10], o);
        let dd1 = Tensor::rand([256, 256], o);
        let dd2 = Tensor::rand([256, 256], o);
        let g1 = Tensor::empty([256, 784], o);
        let g2 = Tensor::empty([256, 256], o);
        let g3 = Tensor::empty([10, 256], o);
        println!("{kind:?}");
        let mut total = 0.0;
        total += time("x·W1ᵀ", 500, || {
            let _ = x.mm_out(&z1, &w1.tr());
        });
        total += time("z1·W2ᵀ", 500, || {
            let _ = z1.mm_out(&z2, &w2.tr());
        });
        total += time("z2·W3ᵀ", 500, || {
            let _ = z2.mm_out(&z3, &w3.tr());
        });
        total += time("z3·W3", 500, || {
            let _ = z3.mm_out(&dd2, &w3);
        });
        total += time("z3ᵀ·z2", 500, || {
            let _ = z3.tr().mm_out(&g3, &z2);
        });
        total += time("dd2·W2", 500, || {
            let _ = dd2.mm_out(&dd1, &w2);
        });
        total += time("dd2ᵀ·z1", 500, || {
            let _ = dd2.tr().mm_out(&g2, &z1);
        });
        total += time("dd1ᵀ·x", 500, || {
            let _ = dd1.tr().mm_out(&g1, &x);
        });
        println!(
            "{:44} {:8.1} µs  ({:.1} ms/epoch)",
            "total",
            total * 1e6,
            total * 235e3
        );
    }
}
