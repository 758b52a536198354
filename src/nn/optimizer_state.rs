//! A `tch` optimizer's state — SGD's momentum buffers, Adam's and AdamW's moments and step
//! counts — which `tch` neither shows nor sets: [`saveable`] wraps an optimizer config, and the
//! [`State`] it hands back reads and sets the state of the libtorch optimizer built from it
//! (`src/cpu/optimizer.cpp`, libtorch's own `Optimizer::save` / `load`).
//!
//! ```no_run
//! use d2l_regularization::nn::optimizer_state;
//! use tch::nn::{self, OptimizerConfig};
//!
//! let vs = nn::VarStore::new(tch::Device::Cpu);
//! let _ = nn::linear(vs.root(), 4, 1, Default::default());
//! let (config, state) = optimizer_state::saveable(nn::Adam::default());
//! let mut opt = config.build(&vs, 1e-3)?;
//! let bytes = state.save()?; // after some steps: Adam's moments
//! state.load(&bytes)?; // into this optimizer, or one built the same way
//! # Ok::<(), anyhow::Error>(())
//! ```
use anyhow::{bail, Result};
use std::cell::Cell;
use std::ffi::c_void;
use std::rc::Rc;
use tch::nn::OptimizerConfig;
use tch::{COptimizer, TchError};

// `COptimizer` is one pointer to the libtorch optimizer and nothing else: a struct of one
// field the size of the struct has that field at offset 0, which `pointer_of` reads.
const _: () = assert!(std::mem::size_of::<COptimizer>() == std::mem::size_of::<*mut c_void>());

fn pointer_of(copt: &COptimizer) -> *mut c_void {
    // SAFETY: same size (asserted above), the only field; the pointer is copied, not owned.
    unsafe { std::mem::transmute_copy::<COptimizer, *mut c_void>(copt) }
}

/// An optimizer config whose built optimizer's state [`State`] reads and sets.
pub struct Saveable<C> {
    config: C,
    built: Rc<Cell<*mut c_void>>,
}

/// The state of the optimizer built from a [`Saveable`] config. It must not be used once that
/// optimizer is dropped: hand it only to what runs while the optimizer trains (an animator).
#[derive(Clone)]
pub struct State {
    built: Rc<Cell<*mut c_void>>,
}

/// `config`, and the handle on the state of the optimizer it will build.
pub fn saveable<C: OptimizerConfig>(config: C) -> (Saveable<C>, State) {
    let built = Rc::new(Cell::new(std::ptr::null_mut()));
    let state = State {
        built: built.clone(),
    };
    (Saveable { config, built }, state)
}

impl<C: OptimizerConfig> OptimizerConfig for Saveable<C> {
    fn build_copt(&self, lr: f64) -> Result<COptimizer, TchError> {
        let copt = self.config.build_copt(lr)?;
        self.built.set(pointer_of(&copt));
        Ok(copt)
    }
}

#[cfg(d2l_aten_capability)]
mod ffi {
    use std::ffi::{c_char, c_void};
    extern "C" {
        pub fn d2l_optimizer_free(pointer: *mut c_void);
        pub fn d2l_optimizer_state(
            optimizer: *mut c_void,
            out: *mut *mut u8,
            length: *mut usize,
        ) -> *mut c_char;
        pub fn d2l_optimizer_set_state(
            optimizer: *mut c_void,
            data: *const u8,
            length: usize,
        ) -> *mut c_char;
    }
}

#[cfg(d2l_aten_capability)]
fn check(error: *mut std::ffi::c_char) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error is a C string the shim allocated; it is freed once, here.
    let message = unsafe { std::ffi::CStr::from_ptr(error) }
        .to_string_lossy()
        .into_owned();
    unsafe { ffi::d2l_optimizer_free(error.cast()) };
    // Its first line: libtorch appends the C++ backtrace of where it was raised.
    let message = message.lines().next().unwrap_or_default();
    bail!("libtorch's optimizer state: {message}")
}

impl State {
    fn pointer(&self) -> Result<*mut c_void> {
        let p = self.built.get();
        if p.is_null() {
            bail!("the optimizer's state was asked for before the optimizer was built");
        }
        Ok(p)
    }

    /// The optimizer's state as libtorch serialises it (a zip archive, the format of
    /// `torch::save(optimizer)` in C++).
    #[cfg(d2l_aten_capability)]
    pub fn save(&self) -> Result<Vec<u8>> {
        let optimizer = self.pointer()?;
        let (mut out, mut length) = (std::ptr::null_mut::<u8>(), 0usize);
        // SAFETY: `optimizer` is the live libtorch optimizer (the handle's contract); the shim
        // mallocs `length` bytes into `out`, copied here and freed once.
        check(unsafe { ffi::d2l_optimizer_state(optimizer, &mut out, &mut length) })?;
        let bytes = unsafe { std::slice::from_raw_parts(out, length) }.to_vec();
        unsafe { ffi::d2l_optimizer_free(out.cast()) };
        Ok(bytes)
    }

    /// Sets the optimizer's state to bytes [`State::save`] wrote (for the same parameters, in
    /// the same groups and order).
    #[cfg(d2l_aten_capability)]
    pub fn load(&self, bytes: &[u8]) -> Result<()> {
        let optimizer = self.pointer()?;
        // SAFETY: as in `save`; the shim reads `length` bytes from `data`.
        check(unsafe { ffi::d2l_optimizer_set_state(optimizer, bytes.as_ptr(), bytes.len()) })
    }

    #[cfg(not(d2l_aten_capability))]
    pub fn save(&self) -> Result<Vec<u8>> {
        let _ = self.pointer()?;
        bail!("this build cannot read an optimizer's state (built without libtorch's headers); checkpoints need it")
    }

    #[cfg(not(d2l_aten_capability))]
    pub fn load(&self, bytes: &[u8]) -> Result<()> {
        let _ = (self.pointer()?, bytes);
        bail!("this build cannot set an optimizer's state (built without libtorch's headers); checkpoints need it")
    }
}
