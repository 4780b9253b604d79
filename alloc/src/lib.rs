//! The `aiaas` binary's memory allocator: mimalloc (`Allocator`, installed by `main.rs` as the
//! global allocator), and `keep_freed_memory`, which `main` calls first.
//!
//! Why mimalloc: a decoding step allocates and frees a few hundred tensors on the engine thread
//! between the parallel matrix products, where nothing else can run. With glibc's allocator its
//! arenas took ~4.5% of that thread's samples at concurrency 8 (`perf`, bench/README.md), and
//! `bench/ab.sh` measured concurrency 8's inter-token latency 15-20% lower with mimalloc.
//!
//! Why keep freed memory: mimalloc 3 hands memory that has been free for a second back to the
//! OS (`purge_delay`, 1000 ms). A batch of prompts allocates tens of MB per layer; after any
//! pause the next batch faulted all of it in afresh, and concurrency 8's TTFT rose by 400-550 ms
//! (`ab.sh`, five of five repetitions). With purging off, freed memory stays with the process
//! for reuse, as glibc keeps its heap. `MIMALLOC_PURGE_DELAY` in the environment still wins.
//!
//! This is the workspace's one crate with `unsafe` code of its own (one FFI call, below); the
//! others forbid it.

/// The global allocator (`#[global_allocator]` in `main.rs`).
pub use mimalloc::MiMalloc as Allocator;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (`mimalloc.h`), which the Rust bindings
/// do not name. The test below checks it against that option's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable through which mimalloc reads its purge delay at start-up.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Turns off mimalloc's purging of freed memory (see the module's header), unless
/// `MIMALLOC_PURGE_DELAY` is set, in which case mimalloc has already read it and it stands.
pub fn keep_freed_memory() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        set_purge_delay(-1);
    }
}

/// mimalloc's current purge delay in milliseconds (-1: never).
pub fn purge_delay() -> i64 {
    // SAFETY: reads one of mimalloc's integer options; no memory is touched.
    #[allow(unsafe_code)]
    let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    delay as i64
}

fn set_purge_delay(milliseconds: i64) {
    // SAFETY: sets one of mimalloc's integer options (mimalloc reads it atomically when it
    // purges); no memory is touched.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, milliseconds as _)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_freed_memory_turns_the_purge_delay_off() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            return;
        }
        // mimalloc 3's default purge delay: the option index names that option.
        assert_eq!(purge_delay(), 1000);
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
