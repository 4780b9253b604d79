pub(super) mod cpu;
mod flash;
mod naive;
mod sinks;

// aiaas patch: the tiled prompt kernel's switch, for tests and measurements.
pub use cpu::{
    decode_avx512, decode_direct, decode_tasks, set_decode_avx512, set_decode_direct,
    set_decode_tasks, set_prompt_tiles, DecodeTasks,
};
pub(crate) use flash::flash_attn;
pub(crate) use naive::{maybe_synchronize, naive_sdpa};
pub(crate) use sinks::sinks_attn;
