//! `--precision`: the number format a model trains in. `f32` is the book's. `bf16-mixed` is
//! mixed precision as PyTorch's `torch.autocast(device_type, dtype=torch.bfloat16)` does it and
//! Lightning's `precision="bf16-mixed"` asks for: the forward pass runs under libtorch's
//! autocast (matrix products in bf16, with f32 accumulation; what autocast keeps in f32 stays
//! there), the logits come back as f32 for an f32 loss, and the backward pass, the weights and
//! the optimizer stay f32.
use anyhow::{bail, Result};
use serde::Serialize;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

/// `--precision`.
#[derive(
    clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, Default,
)]
pub enum Precision {
    /// The book's: everything in f32
    #[default]
    #[value(name = "f32")]
    #[serde(rename = "f32")]
    F32,
    /// The forward pass's matrix products in bf16 (libtorch's autocast), f32 weights, loss, gradients and optimizer
    #[value(name = "bf16-mixed")]
    #[serde(rename = "bf16-mixed")]
    Bf16Mixed,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16Mixed => "bf16-mixed",
        }
    }

    /// Whether this build trains in this precision on `device` (bf16-mixed needs the autocast
    /// shim, built with libtorch's headers).
    pub fn check(self, device: Device) -> Result<()> {
        match self {
            Precision::F32 => Ok(()),
            Precision::Bf16Mixed => Autocast::bf16(device).map(drop),
        }
    }
}

/// What this CPU offers bf16 GEMMs (for `doctor`): libtorch runs them through oneDNN (the
/// autograd engine's) and the fused engine through MKL ([`crate::cpu::gemm`]), both on AMX
/// tiles where the CPU has them (`amx_bf16`), with AVX-512 BF16 instructions where it has those,
/// and by converting to f32 elsewhere (then slower than f32).
pub fn cpu_bf16() -> String {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = flags
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    match (has("amx_bf16"), has("avx512_bf16")) {
        (true, _) => "AMX (amx_bf16): --precision bf16-mixed's GEMMs run on AMX tiles".into(),
        (false, true) => "AVX-512 BF16 (avx512_bf16), no AMX: bf16 GEMMs gain less".into(),
        (false, false) => {
            "no bf16 instructions: --precision bf16-mixed works, slower than f32".into()
        }
    }
}

#[cfg(d2l_aten_capability)]
extern "C" {
    fn d2l_autocast_set(cuda: i32, enabled: i32, before: *mut i32) -> i32;
    fn d2l_autocast_restore(cuda: i32, before: *const i32) -> i32;
}

/// libtorch's autocast to bf16 on a device, in this thread, while it lives; what was set
/// before comes back when it is dropped.
pub struct Autocast {
    cuda: i32,
    before: [i32; 3],
}

impl Autocast {
    /// Autocast to bf16 on `device`'s type (the weight cache off).
    pub fn bf16(device: Device) -> Result<Autocast> {
        let cuda = i32::from(device.is_cuda());
        let mut before = [0; 3];
        #[cfg(d2l_aten_capability)]
        // SAFETY: `before` has the three ints the shim writes.
        if unsafe { d2l_autocast_set(cuda, 1, before.as_mut_ptr()) } == 0 {
            return Ok(Autocast { cuda, before });
        }
        let _ = &mut before;
        bail!(
            "--precision bf16-mixed needs libtorch's autocast, which this build could not reach \
             (it was built without libtorch's headers: run scripts/setup.sh, then build again)"
        )
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        #[cfg(d2l_aten_capability)]
        // SAFETY: `before` is what d2l_autocast_set wrote.
        unsafe {
            d2l_autocast_restore(self.cuda, self.before.as_ptr());
        }
    }
}

/// A model whose forward pass runs under [`Autocast`] and returns f32 logits: the harness
/// wraps the book's model in it, as PyTorch's recipe wraps `net(X)` in `torch.autocast`.
#[derive(Debug)]
pub struct Autocasted {
    inner: Box<dyn ModuleT>,
    device: Device,
}

/// `inner` trained in `precision` on `device`: itself in f32, wrapped in bf16-mixed (checked
/// with [`Precision::check`] first).
pub fn autocasted(
    inner: Box<dyn ModuleT>,
    precision: Precision,
    device: Device,
) -> Box<dyn ModuleT> {
    match precision {
        Precision::F32 => inner,
        Precision::Bf16Mixed => Box::new(Autocasted { inner, device }),
    }
}

impl ModuleT for Autocasted {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let logits = {
            let _on = Autocast::bf16(self.device).expect("Precision::check before training");
            self.inner.forward_t(xs, train)
        };
        logits.to_kind(Kind::Float)
    }
}
