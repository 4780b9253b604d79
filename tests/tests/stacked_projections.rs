//! The GGUF Llama model's stacked projections (vendored mistral.rs patch item 8,
//! `vendor/mistralrs-core/AIAAS-PATCH.md`: query, key and value as one quantized matmul, gate
//! and up as another) compute exactly what the separate matmuls compute; and its Q4_1 prompts,
//! which go through candle's packed prompt kernel (`vendor/candle-core/AIAAS-PATCH.md`, item
//! 8), give each request the same generation alone and among others. Its Q4_1 and Q8_0 weights
//! stored interleaved by eight rows (candle patch items 11 and 14, `interleave_panels`) give the
//! same generations as stored plain.
//!
//! A test binary of its own: it switches the stacking, then the interleaving, off through the
//! environment between loads of the model, which no other test in the process may observe.

use aiaas_engine::{Engine, EngineConfig, GenerateRequest, Generation, Prompt, Sampling};

const MODEL: &str = "tiny-llama-q4_1";

/// Greedy generations with the top-5 log-probabilities of every token: prompts of several
/// lengths one at a time (one-row decoding, prompts of several rows), then the same prompts at
/// once (batched decoding, whose stacked outputs are strided views of the matmul's result).
async fn generations() -> Vec<Generation> {
    let spec = aiaas_tests::tiny_q4_1_gguf(MODEL);
    let engine = Engine::load(EngineConfig::default(), vec![spec])
        .await
        .expect("the quantized tiny GGUF loads");
    let request = |prompt: &str, max_tokens: usize| GenerateRequest {
        model: MODEL.into(),
        prompt: Prompt::Text(prompt.into()),
        sampling: Sampling {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            logprobs: true,
            top_logprobs: 5,
            ..Sampling::default()
        },
    };
    let prompts = [
        ("hi", 24),
        ("tell me a long story about a cat and a dog", 17),
        (
            "one two three four five six seven eight nine ten eleven",
            30,
        ),
        // As long as the one before (checked below): the two prompts are prefilled together.
        (
            "one five four eleven three ten six two eight seven nine",
            20,
        ),
    ];
    let mut out = Vec::new();
    for (prompt, max_tokens) in prompts {
        out.push(
            engine
                .generate(request(prompt, max_tokens))
                .await
                .expect("generation"),
        );
    }
    let together = futures::future::join_all(
        prompts
            .iter()
            .map(|&(prompt, max_tokens)| engine.generate(request(prompt, max_tokens))),
    )
    .await;
    for generation in together {
        out.push(generation.expect("generation"));
    }
    out
}

#[tokio::test]
async fn stacked_projections_give_the_logprobs_of_separate_ones() {
    use candle_core::quantized::k_quants::{interleaved_q4_1_count, interleaved_q8_0_count};
    let before = mistralrs_core::stacked_projection_count();
    let interleaved_before = (interleaved_q4_1_count(), interleaved_q8_0_count());
    let interleaved_since = || {
        (
            interleaved_q4_1_count() - interleaved_before.0,
            interleaved_q8_0_count() - interleaved_before.1,
        )
    };
    let stacked = generations().await;
    // Two layers, each with query|key|value and gate|up stacked.
    assert_eq!(mistralrs_core::stacked_projection_count() - before, 4);
    // Per layer the two stacked matrices, the attention's output and the MLP's down projection,
    // and the Q8_0 output layer (400 rows: fifty panels of eight), in a build with AVX2 (which
    // the panel kernels need).
    let interleaved = interleaved_since();
    if cfg!(target_feature = "avx2") {
        assert_eq!(
            interleaved,
            (8, 1),
            "Q4_1 and Q8_0 weights interleaved at load"
        );
    }

    std::env::set_var("AIAAS_INTERLEAVED_Q4_1", "off");
    std::env::set_var("AIAAS_INTERLEAVED_Q8_0", "off");
    let plain = generations().await;
    std::env::remove_var("AIAAS_INTERLEAVED_Q4_1");
    std::env::remove_var("AIAAS_INTERLEAVED_Q8_0");
    assert_eq!(
        interleaved_since(),
        interleaved,
        "AIAAS_INTERLEAVED_Q4_1=off and AIAAS_INTERLEAVED_Q8_0=off keep the weights as stored"
    );
    for (i, (a, b)) in stacked.iter().zip(&plain).enumerate() {
        assert_eq!(a, b, "generation {i}, interleaved and plain weights");
    }

    let before = mistralrs_core::stacked_projection_count();
    std::env::set_var("AIAAS_STACKED_PROJECTIONS", "off");
    let separate = generations().await;
    std::env::remove_var("AIAAS_STACKED_PROJECTIONS");
    assert_eq!(
        mistralrs_core::stacked_projection_count() - before,
        0,
        "AIAAS_STACKED_PROJECTIONS=off keeps the projections apart"
    );

    // Alone or together (prompts of one length prefilled as one batch, sequences of
    // different lengths decoded in one step), each request gets the same generation: the
    // packed prompt kernel's results for a row do not depend on the rows beside it.
    let (alone, together) = stacked.split_at(stacked.len() / 2);
    assert_eq!(alone[2].usage.prompt_tokens, alone[3].usage.prompt_tokens);
    for (i, (a, b)) in alone.iter().zip(together).enumerate() {
        assert_eq!(a, b, "prompt {i}: alone and together");
    }

    for (i, (a, b)) in stacked.iter().zip(&separate).enumerate() {
        let logprobs = a.choices[0].logprobs.as_ref().expect("logprobs");
        assert!(logprobs.len() >= 10, "generation {i}: {logprobs:?}");
        assert_eq!(a, b, "generation {i}");
    }
    assert_eq!(stacked.len(), separate.len());
}
