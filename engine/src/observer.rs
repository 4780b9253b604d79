//! A logits processor attached to every generation request. mistral.rs calls it once per
//! sampled token with the sequence so far, which gives us exact token counts for every request
//! (its streaming completion chunks carry no usage), and it implements per-request `seed`
//! (mistral.rs has one engine-wide RNG): with a seed, it samples the token itself from a
//! seeded RNG and hands mistral.rs a one-hot distribution to take greedily.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{Result, Tensor};
use mistralrs::CustomLogitsProcessor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub struct SeededSampling {
    pub temperature: f64,
    pub top_p: f64,
    seed: u64,
}

impl SeededSampling {
    pub fn new(seed: u64, temperature: f64, top_p: f64) -> Self {
        Self {
            temperature,
            top_p,
            seed,
        }
    }

    /// Pick a token id from `logits` with temperature and nucleus sampling. The random draw is
    /// a function of the seed and the position only, so it does not depend on how often or in
    /// which batch the engine calls us.
    fn pick(&self, logits: &[f32], position: usize) -> usize {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let t = self.temperature.max(1e-6) as f32;
        let mut probs: Vec<(usize, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| (i, ((l - max) / t).exp()))
            .collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= total);
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0.0f32;
        let mut cut = probs.len();
        for (i, p) in probs.iter().enumerate() {
            kept += p.1;
            if kept as f64 >= self.top_p {
                cut = i + 1;
                break;
            }
        }
        let probs = &probs[..cut];
        let mass: f32 = probs.iter().map(|p| p.1).sum();
        let mut rng = StdRng::seed_from_u64(
            self.seed ^ (position as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut u = rng.random::<f32>() * mass;
        for p in probs {
            if u < p.1 {
                return p.0;
            }
            u -= p.1;
        }
        probs.last().map(|p| p.0).unwrap_or(0)
    }
}

/// Counts tokens of one sequence (and optionally samples with a seed).
pub struct Observer {
    prompt_tokens: AtomicUsize,
    completion_tokens: AtomicUsize,
    seeded: Option<SeededSampling>,
    /// Greedy decoding with logprobs: mistral.rs's greedy path reports log10 of the raw logits,
    /// so hand it probabilities instead (same argmax, and log10 of a probability is a logprob).
    greedy_probs: bool,
    /// The model's configured sequence cap: a longer prompt is stopped before its first token,
    /// and generation stops (as `length`) when the sequence reaches it.
    max_seq_len: usize,
    capped: std::sync::atomic::AtomicBool,
    /// Set once the prompt was refused: mistral.rs may sample a failed sequence again before it
    /// retires it, and that second call must neither count a token nor look like a full sequence.
    refused: std::sync::atomic::AtomicBool,
}

impl Observer {
    pub fn new(seeded: Option<SeededSampling>, greedy_probs: bool, max_seq_len: usize) -> Self {
        Self {
            prompt_tokens: AtomicUsize::new(0),
            completion_tokens: AtomicUsize::new(0),
            seeded,
            greedy_probs,
            max_seq_len,
            capped: std::sync::atomic::AtomicBool::new(false),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether generation stopped because the sequence reached the model's cap.
    pub fn capped(&self) -> bool {
        self.capped.load(Ordering::Acquire)
    }

    /// Whether the prompt was longer than the model's configured cap.
    pub fn prompt_too_long(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens.load(Ordering::Acquire)
    }

    pub fn completion_tokens(&self) -> usize {
        self.completion_tokens.load(Ordering::Acquire)
    }
}

impl CustomLogitsProcessor for Observer {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> Result<Tensor> {
        if self.refused.load(Ordering::Acquire) {
            return Err(candle_core::Error::Msg("prompt refused".into()));
        }
        if self.completion_tokens.fetch_add(1, Ordering::AcqRel) == 0 {
            self.prompt_tokens.store(context.len(), Ordering::Release);
            if context.len() >= self.max_seq_len {
                self.completion_tokens.fetch_sub(1, Ordering::AcqRel);
                self.refused.store(true, Ordering::Release);
                return Err(candle_core::Error::Msg(format!(
                    "prompt of {} tokens reaches the model's max_seq_len of {}",
                    context.len(),
                    self.max_seq_len
                )));
            }
        } else if context.len() >= self.max_seq_len {
            // The sequence is full: this token is not sampled, and the engine stops it.
            self.completion_tokens.fetch_sub(1, Ordering::AcqRel);
            self.capped.store(true, Ordering::Release);
            return Err(candle_core::Error::Msg("max_seq_len reached".into()));
        }
        let Some(seeded) = &self.seeded else {
            if self.greedy_probs {
                return candle_nn::ops::softmax_last_dim(
                    &logits.to_dtype(candle_core::DType::F32)?,
                );
            }
            return Ok(logits.clone());
        };
        let values: Vec<f32> = logits.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let chosen = seeded.pick(&values, context.len());
        let mut onehot = vec![f32::NEG_INFINITY; values.len()];
        onehot[chosen] = 0.0;
        Tensor::from_vec(onehot, values.len(), logits.device())?.to_dtype(logits.dtype())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seeded_picks_depend_on_seed_and_position_only() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let a = SeededSampling::new(7, 1.0, 1.0);
        let b = SeededSampling::new(7, 1.0, 1.0);
        let picks_a: Vec<usize> = (10..40).map(|p| a.pick(&logits, p)).collect();
        let picks_b: Vec<usize> = (10..40)
            .rev()
            .map(|p| b.pick(&logits, p))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert_eq!(picks_a, picks_b, "order of calls must not matter");
        let other: Vec<usize> = (10..40)
            .map(|p| SeededSampling::new(8, 1.0, 1.0).pick(&logits, p))
            .collect();
        assert_ne!(picks_a, other);
    }

    #[test]
    fn tiny_top_p_and_temperature_keep_only_the_best_token() {
        let mut logits = vec![0.0f32; 20];
        logits[13] = 3.0;
        let nucleus = SeededSampling::new(1, 1.0, 0.01);
        let cold = SeededSampling::new(1, 1e-4, 1.0);
        for p in 0..50 {
            assert_eq!(nucleus.pick(&logits, p), 13);
            assert_eq!(cold.pick(&logits, p), 13);
        }
    }

    #[test]
    fn observer_counts_prompt_and_sampled_tokens_and_stops_at_the_cap() {
        let o = Observer::new(None, false, 8);
        let logits = Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        o.apply(&logits, &[1, 2, 3]).unwrap();
        o.apply(&logits, &[1, 2, 3, 4]).unwrap();
        assert_eq!((o.prompt_tokens(), o.completion_tokens()), (3, 2));
        assert!(!o.capped());
        o.apply(&logits, &[1; 7]).unwrap();
        assert!(o.apply(&logits, &[1; 8]).is_err());
        assert!(o.capped());
        assert_eq!(o.completion_tokens(), 3);
        let long = Observer::new(None, false, 4);
        assert!(long.apply(&logits, &[1; 4]).is_err());
        assert!(long.prompt_too_long());
        // The engine may sample a refused sequence once more before retiring it.
        assert!(long.apply(&logits, &[1; 4]).is_err());
        assert!(long.prompt_too_long() && !long.capped());
        assert_eq!(long.completion_tokens(), 0);
    }

    #[test]
    fn greedy_probabilities_keep_the_argmax() {
        let o = Observer::new(None, true, 100);
        let logits = Tensor::new(&[1.0f32, 5.0, -2.0, 4.0], &candle_core::Device::Cpu).unwrap();
        let probs: Vec<f32> = o.apply(&logits, &[1]).unwrap().to_vec1().unwrap();
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let argmax = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(argmax, 1);
    }
}
