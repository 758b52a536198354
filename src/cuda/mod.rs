//! What tch does not expose of libtorch's CUDA side, through a small C++ shim
//! (`src/cuda/shim.cpp`, compiled by `build.rs` whenever the linked libtorch has CUDA):
//! CUDA graphs, the CUDA runtime's and driver's versions, device properties, and a count of the
//! operators libtorch dispatches (about one kernel launch each on a GPU).
//!
//! Built against a CPU-only libtorch, or without the CUDA headers, every function here returns
//! an error saying so.
//!
//! # CUDA graphs
//!
//! tch exposes no CUDA graphs, so the shim (`src/cuda/shim.cpp`, compiled by
//! `build.rs` with the `cc` crate whenever the linked libtorch has CUDA) wraps libtorch's
//! `at::cuda::CUDAGraph`: warm-up and capture on a side stream from libtorch's pool, replay on the
//! current stream, every C++ exception returned as a message (never thrown across the FFI); Rust
//! owns a graph as `cuda::CudaGraph`. On a CUDA device the fused dropout engine
//! (`--engine fused`, `--cuda-graph auto|on|off`, default `auto` = on there) trains its first epoch
//! on the side stream as the warm-up, captures the whole epoch (235 steps) once, and replays it
//! for every later epoch: the permutation is drawn eagerly into a static index buffer, the loss and
//! accuracy sums accumulate in static device tensors read once per epoch, and libtorch's generator
//! (registered at capture) gives fresh dropout masks on every replay. A failed capture or replay
//! prints one warning line and the run goes on without graphs. `--cuda-graph on` is refused, naming
//! the flag, on the CPU, with the autograd engine, or in a build without the shim. A stop request
//! (Ctrl-C) is honoured between epochs when an epoch is a graph.
//!
//! The step the graph captures has 35 working libtorch operators (about one kernel each on a GPU;
//! views not counted) instead of 46 before this was trimmed (the autograd engine runs 50): the
//! dropout scales are folded into the next layer's GEMM (α = 1/(1−p)), the loss gradient's factor
//! and the gradient flowing back; each bias gradient is one GEMV; ReLU-and-mask backward is one
//! `threshold_backward`; the one-hot is subtracted by one `scatter_add_`. `bench` counts them with
//! a libtorch `RecordFunction` observer from the shim (CPU here, the same operator sequence).
//!
//! What is tested without a GPU (`tests/cuda.rs`): the shim is built and a graph without a GPU is a
//! one-line error; an epoch of the tensor-op path uses the same memory every time (order buffer,
//! sums, parameters) and runs no operator that reads a value back to the host (the observer counts
//! them); `--cuda-graph on` is refused where it cannot apply; `--cuda-graph off` changes nothing on
//! the CPU; `doctor` reports. With a GPU the same binary also captures a graph, replays it and sees
//! fresh random numbers on each replay, and checks the epoch's memory on CUDA;
//! `scripts/gpu-check.sh` runs those tests from the prebuilt test binary.
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::ffi::{c_char, CStr};

/// Whether this build has the shim.
pub const SHIM: bool = cfg!(d2l_cuda_shim);

#[cfg(d2l_cuda_shim)]
mod ffi {
    use std::ffi::c_char;

    #[repr(C)]
    pub struct D2lGraph {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn d2l_free_error(error: *mut c_char);
        pub fn d2l_cuda_versions(runtime: *mut i32, driver: *mut i32) -> *mut c_char;
        pub fn d2l_cuda_device_count(count: *mut i32) -> *mut c_char;
        pub fn d2l_cudnn_version(version: *mut std::ffi::c_long) -> *mut c_char;
        pub fn d2l_cuda_device_properties(
            device: i32,
            name: *mut c_char,
            name_len: usize,
            memory: *mut usize,
            major: *mut i32,
            minor: *mut i32,
        ) -> *mut c_char;
        pub fn d2l_graph_new(device: i32, out: *mut *mut D2lGraph) -> *mut c_char;
        pub fn d2l_graph_enter_side_stream(g: *mut D2lGraph) -> *mut c_char;
        pub fn d2l_graph_leave_side_stream(g: *mut D2lGraph) -> *mut c_char;
        pub fn d2l_graph_capture_begin(g: *mut D2lGraph) -> *mut c_char;
        pub fn d2l_graph_capture_end(g: *mut D2lGraph) -> *mut c_char;
        pub fn d2l_graph_replay(g: *mut D2lGraph) -> *mut c_char;
        pub fn d2l_graph_free(g: *mut D2lGraph);
        pub fn d2l_op_counter_start() -> *mut c_char;
        pub fn d2l_op_counter_stop(
            launching: *mut i64,
            all: *mut i64,
            reads: *mut i64,
        ) -> *mut c_char;
    }
}

const NO_SHIM: &str = "this binary was built without the CUDA shim (the linked libtorch has no \
                       CUDA, or the CUDA headers were missing at build time: run scripts/setup.sh \
                       and rebuild)";

/// Turns the shim's error string (null on success) into a result, freeing it.
#[cfg(d2l_cuda_shim)]
fn check(error: *mut c_char) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error is a NUL-terminated string malloc'd by the shim, freed once here.
    let message = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .into_owned();
    unsafe { ffi::d2l_free_error(error) };
    Err(anyhow!(first_line(&message)))
}

/// libtorch's messages carry a C++ backtrace after the first line.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_string()
}

/// The CUDA runtime's version this binary uses and the installed driver's (both as CUDA writes
/// them, e.g. 13000 for 13.0; the driver's is 0 when no driver is installed).
pub fn impls() -> Result<(i32, i32)> {
    #[cfg(d2l_cuda_shim)]
    {
        let (mut runtime, mut driver) = (0, 0);
        // SAFETY: two valid out-pointers.
        check(unsafe { ffi::d2l_cuda_versions(&mut runtime, &mut driver) })?;
        Ok((runtime, driver))
    }
    #[cfg(not(d2l_cuda_shim))]
    bail!(NO_SHIM)
}

/// The cuDNN version libtorch was built with (e.g. 91002 for 9.10.2), `None` without cuDNN.
pub fn cudnn_version() -> Result<Option<i64>> {
    #[cfg(d2l_cuda_shim)]
    {
        let mut version: std::ffi::c_long = 0;
        // SAFETY: a valid out-pointer.
        check(unsafe { ffi::d2l_cudnn_version(&mut version) })?;
        Ok((version > 0).then_some(version as i64))
    }
    #[cfg(not(d2l_cuda_shim))]
    bail!(NO_SHIM)
}

/// `13000` → `13.0`.
pub fn version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The number of CUDA devices the runtime sees, or why it sees none.
pub fn device_count() -> Result<usize> {
    #[cfg(d2l_cuda_shim)]
    {
        let mut count = 0;
        // SAFETY: a valid out-pointer.
        check(unsafe { ffi::d2l_cuda_device_count(&mut count) })?;
        Ok(count.max(0) as usize)
    }
    #[cfg(not(d2l_cuda_shim))]
    bail!(NO_SHIM)
}

/// What `doctor` says of a GPU.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub index: usize,
    pub name: String,
    pub memory_bytes: usize,
    pub compute_capability: String,
}

pub fn device_info(index: usize) -> Result<DeviceInfo> {
    #[cfg(d2l_cuda_shim)]
    {
        let mut name = [0 as c_char; 256];
        let (mut memory, mut major, mut minor) = (0usize, 0, 0);
        // SAFETY: the name buffer holds 256 bytes and the shim writes at most that, NUL included.
        check(unsafe {
            ffi::d2l_cuda_device_properties(
                index as i32,
                name.as_mut_ptr(),
                name.len(),
                &mut memory,
                &mut major,
                &mut minor,
            )
        })?;
        // SAFETY: the shim NUL-terminates the name.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(DeviceInfo {
            index,
            name,
            memory_bytes: memory,
            compute_capability: format!("{major}.{minor}"),
        })
    }
    #[cfg(not(d2l_cuda_shim))]
    {
        let _ = index;
        bail!(NO_SHIM)
    }
}

/// A captured CUDA graph: the kernels of some Rust code that calls libtorch, recorded once and
/// replayed without the host. libtorch registers the default CUDA generator at capture, so
/// random draws inside the graph (dropout masks) are fresh on every replay.
pub struct CudaGraph {
    #[cfg(d2l_cuda_shim)]
    raw: *mut ffi::D2lGraph,
}

impl CudaGraph {
    /// Runs `warm_up` on a side stream (its work really happens: kernels are chosen and memory
    /// pooled there first, as CUDA graphs require), then captures `body` on the same stream
    /// (capturing runs nothing) and makes the previous stream current again. Any failure —
    /// including a libtorch error inside `body`, which tch raises as a panic — is returned as an
    /// error, and the stream is restored.
    pub fn capture(
        device: usize,
        warm_up: impl FnOnce(),
        body: impl FnOnce(),
    ) -> Result<CudaGraph> {
        #[cfg(d2l_cuda_shim)]
        {
            use std::panic::{catch_unwind, AssertUnwindSafe};
            let mut raw = std::ptr::null_mut();
            // SAFETY: a valid out-pointer; the graph is owned by the value returned below.
            check(unsafe { ffi::d2l_graph_new(device as i32, &mut raw) })?;
            let graph = CudaGraph { raw };
            // SAFETY: `raw` is a live graph for all the calls below.
            check(unsafe { ffi::d2l_graph_enter_side_stream(raw) })?;
            let captured = (|| -> Result<()> {
                catch_unwind(AssertUnwindSafe(warm_up))
                    .map_err(|p| anyhow!("warm-up failed: {}", panic_message(&p)))?;
                check(unsafe { ffi::d2l_graph_capture_begin(raw) })?;
                let body = catch_unwind(AssertUnwindSafe(body));
                let end = check(unsafe { ffi::d2l_graph_capture_end(raw) });
                body.map_err(|p| anyhow!("capture failed: {}", panic_message(&p)))?;
                end
            })();
            let left = check(unsafe { ffi::d2l_graph_leave_side_stream(raw) });
            captured?;
            left?;
            Ok(graph)
        }
        #[cfg(not(d2l_cuda_shim))]
        {
            let _ = (device, warm_up, body);
            bail!(NO_SHIM)
        }
    }

    /// Launches the captured kernels on the current stream.
    pub fn replay(&self) -> Result<()> {
        #[cfg(d2l_cuda_shim)]
        {
            // SAFETY: `raw` is a live, captured graph.
            check(unsafe { ffi::d2l_graph_replay(self.raw) })
        }
        #[cfg(not(d2l_cuda_shim))]
        bail!(NO_SHIM)
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        #[cfg(d2l_cuda_shim)]
        // SAFETY: `raw` came from d2l_graph_new and is freed once.
        unsafe {
            ffi::d2l_graph_free(self.raw)
        };
    }
}

#[cfg(d2l_cuda_shim)]
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into());
    let text = text
        .split_once("Torch(\"")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or(text);
    first_line(&text.replace("\\n", "\n"))
}

/// What [`count_ops`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    /// Top-level operators that do work: on a GPU about one kernel launch each (views and
    /// metadata not counted).
    pub launching: i64,
    /// Every top-level operator, views included.
    pub all: i64,
    /// Operators, at any depth, that read values back to the host or copy between devices
    /// (`item`, `to`, `nonzero`, …): each a synchronisation on a GPU.
    pub host_reads: i64,
}

/// The operators `f` makes libtorch run. Counts every thread, so run nothing else meanwhile.
pub fn count_ops(f: impl FnOnce()) -> Result<OpCounts> {
    #[cfg(d2l_cuda_shim)]
    {
        // SAFETY: plain calls; the counter is process-global and removed at stop.
        check(unsafe { ffi::d2l_op_counter_start() })?;
        f();
        let mut c = OpCounts::default();
        check(unsafe {
            ffi::d2l_op_counter_stop(&mut c.launching, &mut c.all, &mut c.host_reads)
        })?;
        Ok(c)
    }
    #[cfg(not(d2l_cuda_shim))]
    {
        let _ = f;
        bail!(NO_SHIM)
    }
}

/// `--cuda-graph`: whether the fused engine replays each training epoch as a CUDA graph.
#[derive(
    clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum GraphMode {
    /// On for the fused engine on a CUDA device, off otherwise
    #[default]
    Auto,
    /// Always (refused where it cannot be: not CUDA, not the fused engine, no shim)
    On,
    /// Never: every step is launched from the host
    Off,
}

impl GraphMode {
    /// Whether a run on `device` with the `fused` engine (or not) uses graphs; `On` where that
    /// is impossible is an error naming the flag and the way out.
    pub fn resolve(self, device: tch::Device, fused: bool) -> Result<bool> {
        let cuda = device.is_cuda();
        match self {
            GraphMode::Off => Ok(false),
            GraphMode::Auto => Ok(cuda && fused && SHIM),
            GraphMode::On => {
                if !cuda {
                    bail!(
                        "--cuda-graph on needs a CUDA device, but this run is on {}; use \
                         --device cuda, or --cuda-graph auto|off",
                        crate::device::name(device)
                    );
                }
                if !fused {
                    bail!(
                        "--cuda-graph on needs --engine fused (the autograd engine launches \
                         every step from the host); add --engine fused, or use --cuda-graph \
                         auto|off"
                    );
                }
                if !SHIM {
                    bail!("--cuda-graph on: {NO_SHIM}");
                }
                Ok(true)
            }
        }
    }
}
