//! libtorch's default random generators' states (tch exposes neither reading nor setting
//! them; `src/cpu/generator.cpp` does): the CPU generator's Mersenne twister, and on a CUDA
//! device its Philox seed and offset. The same bytes as PyTorch's `torch.get_rng_state()` and
//! `torch.cuda.get_rng_state(i)`.
use anyhow::{bail, Result};
use tch::Device;

#[cfg(d2l_aten_capability)]
mod ffi {
    use std::ffi::c_char;
    extern "C" {
        pub fn d2l_generator_free_error(error: *mut c_char);
        pub fn d2l_generator_state(
            cuda: i32,
            index: i32,
            out: *mut u8,
            capacity: usize,
            length: *mut usize,
        ) -> *mut c_char;
        pub fn d2l_generator_set_state(
            cuda: i32,
            index: i32,
            data: *const u8,
            length: usize,
        ) -> *mut c_char;
    }
}

/// The generators a run on `device` draws from: the CPU's, and the device's own on CUDA.
pub fn of(device: Device) -> Vec<Device> {
    match device {
        Device::Cuda(_) => vec![Device::Cpu, device],
        _ => vec![Device::Cpu],
    }
}

/// `cpu` or `cuda:N`: how a generator is named in a checkpoint.
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

fn which(device: Device) -> Result<(i32, i32)> {
    match device {
        Device::Cpu => Ok((0, 0)),
        Device::Cuda(i) => Ok((1, i32::try_from(i)?)),
        other => bail!("no generator state for {other:?}"),
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
    unsafe { ffi::d2l_generator_free_error(error) };
    bail!("libtorch's generator: {message}")
}

/// The state of `device`'s default generator.
#[cfg(d2l_aten_capability)]
pub fn state(device: Device) -> Result<Vec<u8>> {
    let (cuda, index) = which(device)?;
    let mut bytes = vec![0u8; 8192];
    let mut length = 0usize;
    // SAFETY: the shim writes at most `capacity` bytes into `bytes` and the length into
    // `length`.
    check(unsafe {
        ffi::d2l_generator_state(cuda, index, bytes.as_mut_ptr(), bytes.len(), &mut length)
    })?;
    if length > bytes.len() {
        bytes = vec![0u8; length];
        check(unsafe {
            ffi::d2l_generator_state(cuda, index, bytes.as_mut_ptr(), bytes.len(), &mut length)
        })?;
    }
    bytes.truncate(length);
    Ok(bytes)
}

/// Sets `device`'s default generator to a state [`state`] read.
#[cfg(d2l_aten_capability)]
pub fn set_state(device: Device, bytes: &[u8]) -> Result<()> {
    let (cuda, index) = which(device)?;
    // SAFETY: the shim reads `length` bytes from `data`.
    check(unsafe { ffi::d2l_generator_set_state(cuda, index, bytes.as_ptr(), bytes.len()) })
}

#[cfg(not(d2l_aten_capability))]
pub fn state(device: Device) -> Result<Vec<u8>> {
    let _ = which(device)?;
    bail!("this build cannot read libtorch's generator (built without libtorch's headers); checkpoints need it")
}

#[cfg(not(d2l_aten_capability))]
pub fn set_state(device: Device, bytes: &[u8]) -> Result<()> {
    let _ = (which(device)?, bytes);
    bail!("this build cannot set libtorch's generator (built without libtorch's headers); checkpoints need it")
}
