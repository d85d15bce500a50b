//! Engine configuration and the epoch ticker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Dirty bytes of a linear memory reset in place (per pool slot; more than
/// this falls back to madvise). Small functions dirty far less.
const RESIDENT_MEMORY: usize = 2 << 20;
/// The same for tables.
const RESIDENT_TABLE: usize = 256 << 10;

use crate::{Profile, SandboxConfig};

/// Builds the engine for one [`Profile`].
///
/// Both profiles meter fuel and use epoch interruption; the deterministic one
/// additionally canonicalizes NaNs and pins relaxed-SIMD semantics, so two
/// machines produce the same bits and burn the same fuel.
pub(crate) fn build_engine(config: &SandboxConfig, profile: Profile) -> wasmtime::Result<Engine> {
    let mut c = Config::new();
    c.consume_fuel(true);
    c.epoch_interruption(true);
    // Threads stay off: wasmtime is built without its `threads` feature, so
    // shared memories fail validation.
    c.wasm_component_model(true);
    c.parallel_compilation(true);
    c.memory_init_cow(true);
    c.max_wasm_stack(config.max_wasm_stack);
    if profile == Profile::Deterministic {
        c.cranelift_nan_canonicalization(true);
        c.relaxed_simd_deterministic(true);
    }

    let n = config.max_concurrent_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // A component typically holds a handful of core instances (the main
        // module plus adapter shims), each with its own memory and tables.
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(config.max_memory_bytes as usize)
        .table_elements(config.max_table_elements as usize)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .max_unused_warm_slots(n.min(64))
        // Reset a used slot by zeroing only its dirty pages (found with the
        // PAGEMAP_SCAN ioctl where the kernel has it) instead of madvise:
        // no page faults on the next use and, above all, no TLB-shootdown
        // IPIs to the other cores on every execution.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(RESIDENT_MEMORY)
        .table_keep_resident(RESIDENT_TABLE);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&c)
}

/// One thread per [`Sandbox`](crate::Sandbox) that advances every engine's
/// epoch. Executions never spawn threads of their own.
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(crate) fn start(engines: Vec<Engine>, tick: Duration) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("brume-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(tick);
                    for e in &engines {
                        e.increment_epoch();
                    }
                }
            })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
