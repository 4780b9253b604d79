//! The engine pool's keep-awake jobs (vendored mistral.rs patch items 10 and 26,
//! `vendor/mistralrs-core/AIAAS-PATCH.md`): they start while `keep_awake::from()` sequences or
//! more run (one by default), and they all end once the engine has nothing left to do, so an
//! idle server does not keep a core spinning. A test binary of its own: the jobs' counters and
//! the threshold are process-wide.

use std::time::{Duration, Instant};

use aiaas_engine::{Engine, EngineConfig, GenerateRequest, Prompt, Sampling};
use mistralrs_core::keep_awake;

const MODEL: &str = "tiny-llama-q4_1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_awake_jobs_run_with_sequences_and_end_when_idle() {
    let spec = aiaas_tests::tiny_q4_1_gguf(MODEL);
    let engine = Engine::load(EngineConfig::default(), vec![spec])
        .await
        .expect("the quantized tiny GGUF loads");
    let (_, started_before) = keep_awake::state();
    let request = |prompt: &str| GenerateRequest {
        model: MODEL.into(),
        prompt: Prompt::Text(prompt.into()),
        sampling: Sampling {
            temperature: Some(0.0),
            max_tokens: Some(24),
            ..Sampling::default()
        },
    };
    let generations = futures::future::join_all(
        ["one two three", "a cat and a dog", "hello"].map(|p| engine.generate(request(p))),
    )
    .await;
    for generation in generations {
        let generation = generation.expect("generation");
        assert!(generation.usage.completion_tokens > 0, "nothing generated");
    }
    let (_, started) = keep_awake::state();
    assert!(
        started > started_before,
        "no keep-awake job started while sequences ran"
    );
    // Idle now: every job ends.
    wait_until_idle().await;
    // One sequence alone starts them by default (item 26)...
    assert_eq!(keep_awake::from(), 1, "the default threshold");
    engine
        .generate(request("alone"))
        .await
        .expect("generation alone");
    let (_, after_one) = keep_awake::state();
    assert!(after_one > started, "no job started for one sequence");
    wait_until_idle().await;
    // ...but not with the threshold at two (item 10's), where two again do.
    keep_awake::set_from(2);
    engine
        .generate(request("alone again"))
        .await
        .expect("generation alone");
    let (_, after_second_one) = keep_awake::state();
    assert_eq!(
        after_second_one, after_one,
        "a job started for one sequence with the threshold at two"
    );
    let again =
        futures::future::join_all(["again", "and again"].map(|p| engine.generate(request(p))))
            .await;
    assert!(again.iter().all(Result::is_ok), "generations after idle");
    assert!(
        keep_awake::state().1 > after_second_one,
        "no job started for two later requests"
    );
    wait_until_idle().await;
}

/// Every job ends once the engine is idle (it marks itself so on its next loop).
async fn wait_until_idle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (spinning, _) = keep_awake::state();
        if spinning == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{spinning} keep-awake job(s) still running 10 s after the last sequence ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
