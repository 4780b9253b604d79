//! Requests to mistral.rs: building `NormalRequest`s from our types, turning its responses into
//! our events, one engine request per choice (so `n` > 1 streams correctly), and cancellation
//! by dropping the receiver (mistral.rs stops a sequence whose responder is gone).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use either::Either;
use futures::stream::SelectAll;
use futures::{Stream, StreamExt};
use indexmap::IndexMap;
use mistralrs::core::{DetokenizationRequest, RequestMessage, TokenizationRequest};
use mistralrs::{
    Constraint, CustomLogitsProcessor, MessageContent, NormalRequest, Request, Response,
    SamplingParams, StopTokens,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::observer::{Observer, SeededSampling};
use crate::types::*;
use crate::{GenerationStream, Served, TokenizeInput};

/// How long `start` waits for the first event, so that refusals mistral.rs makes while
/// admitting a request (e.g. prompt longer than the context) are still plain errors.
const FIRST_EVENT_WAIT: Duration = Duration::from_secs(2);

fn model_of(served: &Served) -> Result<&mistralrs::Model, EngineError> {
    match &served.backend {
        crate::Backend::Mistral(m) => Ok(m),
        crate::Backend::Bert(_) => Err(EngineError::internal("not a mistral.rs model")),
    }
}

pub(crate) fn chat_messages(messages: &[Message]) -> Vec<IndexMap<String, MessageContent>> {
    messages
        .iter()
        .map(|m| {
            let mut map: IndexMap<String, MessageContent> = IndexMap::new();
            map.insert("role".into(), Either::Left(m.role.as_str().to_string()));
            map.insert("content".into(), Either::Left(m.content.clone()));
            if let Some(name) = &m.name {
                map.insert("name".into(), Either::Left(name.clone()));
            }
            if let Some(id) = &m.tool_call_id {
                map.insert("tool_call_id".into(), Either::Left(id.clone()));
            }
            if !m.tool_calls.is_empty() {
                let calls = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let mut call = IndexMap::new();
                        call.insert("id".to_string(), json!(c.id));
                        call.insert("type".to_string(), json!("function"));
                        call.insert(
                            "function".to_string(),
                            json!({"name": c.name, "arguments": c.arguments}),
                        );
                        call
                    })
                    .collect();
                map.insert("tool_calls".into(), Either::Right(calls));
            }
            map
        })
        .collect()
}

fn to_mistral_tools(
    tools: &[ToolSpec],
    choice: &ToolChoice,
) -> Result<(Option<Vec<mistralrs::Tool>>, Option<mistralrs::ToolChoice>), EngineError> {
    if tools.is_empty() || *choice == ToolChoice::None {
        return Ok((None, None));
    }
    let convert = |t: &ToolSpec| {
        serde_json::from_value::<mistralrs::Tool>(json!({
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }))
        .map_err(|e| EngineError::InvalidRequest {
            param: "tools",
            message: format!("Invalid tool `{}`: {e}", t.name),
        })
    };
    let list = tools.iter().map(convert).collect::<Result<Vec<_>, _>>()?;
    let choice = match choice {
        ToolChoice::Auto => mistralrs::ToolChoice::Auto,
        ToolChoice::None => mistralrs::ToolChoice::None,
        ToolChoice::Required => {
            return Err(EngineError::Unsupported {
                param: "tool_choice",
                detail: "`required` (use `auto` or name a function)".into(),
            })
        }
        ToolChoice::Function(name) => {
            let tool = tools.iter().find(|t| &t.name == name).ok_or_else(|| {
                EngineError::InvalidRequest {
                    param: "tool_choice",
                    message: format!("No tool named `{name}`."),
                }
            })?;
            mistralrs::ToolChoice::Tool(convert(tool)?)
        }
    };
    Ok((Some(list), Some(choice)))
}

/// Ask llguidance for JSON without free whitespace between tokens (unless the schema says
/// otherwise with its own `x-guidance`): small models otherwise loop on whitespace until
/// `max_tokens`, which is paid for and never valid.
fn compact_json(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(object) = schema.as_object_mut() {
        object
            .entry("x-guidance")
            .or_insert_with(|| json!({"whitespace_flexible": false}));
    }
    schema
}

fn sampling_params(s: &Sampling, seeded: bool) -> SamplingParams {
    let mut p = SamplingParams::neutral();
    // OpenAI's default temperature is 1; 0 means greedy.
    let temperature = s.temperature.unwrap_or(1.0);
    // mistral.rs reads None as 1.0 and anything below 1e-7 as greedy.
    p.temperature = if seeded || temperature == 0.0 {
        Some(0.0)
    } else {
        Some(temperature)
    };
    p.top_p = if seeded { None } else { s.top_p };
    p.top_n_logprobs = s.top_logprobs;
    p.presence_penalty = s.presence_penalty;
    p.frequency_penalty = s.frequency_penalty;
    p.stop_toks = (!s.stop.is_empty()).then(|| StopTokens::Seqs(s.stop.clone()));
    p.max_len = s.max_tokens;
    p.n_choices = 1;
    p
}

/// Start generation: one mistral.rs request per choice, merged into one stream.
pub async fn start(
    served: Arc<Served>,
    request: GenerateRequest,
    max_queued: usize,
    deadline: Option<Instant>,
) -> Result<(GenerationStream, UsageMeter), EngineError> {
    let model = model_of(&served)?;
    let s = &request.sampling;
    let temperature = s.temperature.unwrap_or(1.0);
    let seeded = s.seed.is_some() && temperature > 0.0;
    if seeded && s.logprobs {
        return Err(EngineError::Unsupported {
            param: "seed",
            detail: "`seed` together with `logprobs` at a temperature above 0".into(),
        });
    }
    let (messages, tools, tool_choice, is_chat) = match &request.prompt {
        Prompt::Chat {
            messages,
            tools,
            tool_choice,
        } => {
            if !tools.is_empty() && *tool_choice != ToolChoice::None && !served.supports_tools {
                return Err(EngineError::Unsupported {
                    param: "tools",
                    detail: format!(
                        "the chat template of `{}` does not render tools",
                        served.info.id
                    ),
                });
            }
            let (tools, choice) = to_mistral_tools(tools, tool_choice)?;
            (Some(chat_messages(messages)), tools, choice, true)
        }
        Prompt::Text(text) => {
            if text.is_empty() {
                return Err(EngineError::InvalidRequest {
                    param: "prompt",
                    message: "`prompt` must not be empty.".into(),
                });
            }
            (None, None, None, false)
        }
    };
    let constraint = match &s.format {
        OutputFormat::Text => Constraint::None,
        OutputFormat::JsonObject => Constraint::JsonSchema(compact_json(json!({"type": "object"}))),
        OutputFormat::JsonSchema(schema) => Constraint::JsonSchema(compact_json(schema.clone())),
    };
    let queued = served.waiting.load(Ordering::Relaxed) + served.running.load(Ordering::Relaxed);
    if queued + s.n > max_queued {
        return Err(EngineError::Overloaded);
    }
    let sender = model
        .inner()
        .get_sender(None)
        .map_err(EngineError::internal)?;

    let mut choices = SelectAll::new();
    let mut observers = Vec::with_capacity(s.n);
    let mut counts = Vec::with_capacity(s.n);
    let prompt_counts: Vec<Arc<AtomicUsize>> =
        (0..s.n).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    for index in 0..s.n {
        let greedy_probs = s.logprobs && temperature == 0.0;
        let observer = Arc::new(Observer::new(
            s.seed.filter(|_| seeded).map(|seed| {
                SeededSampling::new(
                    seed.wrapping_add(index as u64),
                    temperature,
                    s.top_p.unwrap_or(1.0),
                )
            }),
            greedy_probs,
            served.info.max_seq_len,
        ));
        observers.push(observer.clone());
        let message = match (&messages, &request.prompt) {
            (Some(m), _) => RequestMessage::Chat {
                messages: m.clone(),
                enable_thinking: None,
                reasoning_effort: None,
            },
            (None, Prompt::Text(text)) => RequestMessage::Completion {
                text: text.clone(),
                echo_prompt: false,
                best_of: None,
            },
            (None, Prompt::Chat { .. }) => {
                return Err(EngineError::internal("chat without messages"))
            }
        };
        let (tx, engine_rx) = mpsc::channel(64);
        let rx = relay(engine_rx);
        let processor: Arc<dyn CustomLogitsProcessor> = observer;
        let normal = NormalRequest {
            messages: message,
            sampling_params: sampling_params(s, seeded),
            response: tx,
            return_logprobs: s.logprobs,
            is_streaming: true,
            id: 0,
            constraint: constraint.clone(),
            suffix: None,
            tools: tools.clone(),
            tool_choice: tool_choice.clone(),
            logits_processors: Some(vec![processor]),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        };
        sender
            .send(Request::Normal(Box::new(normal)))
            .await
            .map_err(|_| EngineError::internal("the model's engine has stopped"))?;
        served.waiting.fetch_add(1, Ordering::Relaxed);
        let tokens = Arc::new(AtomicUsize::new(0));
        counts.push(tokens.clone());
        choices.push(ChoiceStream {
            rx,
            index,
            is_chat,
            pending: VecDeque::new(),
            state: ChoiceState::Waiting,
            served: served.clone(),
            observer: observers[index].clone(),
            max_tokens: s.max_tokens,
            steps: 0,
            tokens,
            stops: s.stop.clone(),
            held: String::new(),
            held_logprobs: Vec::new(),
            engine_prompt_tokens: prompt_counts[index].clone(),
        });
    }
    let meter = UsageMeter {
        observers: observers.clone(),
    };
    let mut stream = MergedStream {
        choices,
        observers,
        counts,
        prompt_counts,
        pending: VecDeque::new(),
        finished: false,
    };
    // Wait for the first event: refusals come back at once. Without a deadline the wait is
    // brief and the stream is returned still queued; with one, a request that has not started
    // by then is dropped (which cancels it in the engine) and reported as timed out.
    let queued_at = Instant::now();
    let wait = match deadline {
        Some(deadline) => deadline.saturating_duration_since(queued_at),
        None => FIRST_EVENT_WAIT,
    };
    match tokio::time::timeout(wait, stream.next()).await {
        Ok(Some(Err(e))) => return Err(e),
        Ok(Some(Ok(event))) => stream.pending.push_back(Ok(event)),
        Ok(None) => return Err(EngineError::internal("empty generation")),
        Err(_) if deadline.is_some() => {
            return Err(EngineError::QueueTimeout {
                waited_ms: queued_at.elapsed().as_millis() as u64,
            })
        }
        Err(_) => {}
    }
    Ok((Box::pin(stream), meter))
}

/// Tokens a generation has used so far, readable while it runs and after it was dropped (a
/// client that went away is still charged for what the engine did).
#[derive(Clone)]
pub struct UsageMeter {
    observers: Vec<Arc<Observer>>,
}

impl UsageMeter {
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.observers.first().map_or(0, |o| o.prompt_tokens()),
            completion_tokens: self.observers.iter().map(|o| o.completion_tokens()).sum(),
        }
    }
}

/// Move responses from the engine's bounded channel to an unbounded one at once, so a slow
/// client never stalls the model's engine loop (which waits on each send). When the consumer is
/// gone the relay ends, the engine's next send fails, and it cancels the sequence.
fn relay(mut engine_rx: mpsc::Receiver<Response>) -> mpsc::UnboundedReceiver<Response> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(response) = engine_rx.recv().await {
            if tx.send(response).is_err() {
                break;
            }
        }
    });
    rx
}

/// Run a one-shot engine call on its own task: mistral.rs panics its engine loop when the
/// receiver of a non-streaming request is dropped early, so the receiver is always drained
/// even if our caller goes away.
async fn detached<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::spawn(fut).await.map_err(EngineError::internal)?
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ChoiceState {
    Waiting,
    Running,
    Done,
}

/// The responses of one choice's engine request.
struct ChoiceStream {
    rx: mpsc::UnboundedReceiver<Response>,
    index: usize,
    is_chat: bool,
    pending: VecDeque<Result<GenerationEvent, EngineError>>,
    state: ChoiceState,
    served: Arc<Served>,
    observer: Arc<Observer>,
    max_tokens: Option<usize>,
    /// Engine steps seen (one streamed chunk per sampled token, mostly).
    steps: usize,
    /// Completion tokens of this choice, set when it finishes.
    tokens: Arc<AtomicUsize>,
    /// Stop sequences: mistral.rs stops on them but streams them (and a token more), so text
    /// is held back until it cannot be the start of a stop sequence, and cut at a match.
    stops: Vec<String>,
    held: String,
    held_logprobs: Vec<TokenLogprob>,
    /// Prompt tokens as mistral.rs reported them on its last chat chunk (0 until then).
    engine_prompt_tokens: Arc<AtomicUsize>,
}

impl ChoiceStream {
    /// Queue text for the client, holding back what could still become a stop sequence.
    fn emit_text(&mut self, text: String, logprobs: Option<Vec<TokenLogprob>>) {
        let index = self.index;
        if self.stops.is_empty() {
            self.pending.push_back(Ok(GenerationEvent::Delta {
                index,
                text,
                logprobs,
            }));
            return;
        }
        self.held.push_str(&text);
        if let Some(lp) = logprobs {
            self.held_logprobs.extend(lp);
        }
        let matched = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = matched {
            self.held.truncate(at);
            self.flush_held();
            self.finish_with(FinishReason::Stop);
            return;
        }
        let keep = self
            .stops
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let mut cut = self.held.len().saturating_sub(keep);
        while !self.held.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut > 0 {
            let rest = self.held.split_off(cut);
            let ready = std::mem::replace(&mut self.held, rest);
            let logprobs =
                (!self.held_logprobs.is_empty()).then(|| std::mem::take(&mut self.held_logprobs));
            self.pending.push_back(Ok(GenerationEvent::Delta {
                index,
                text: ready,
                logprobs,
            }));
        }
    }

    fn flush_held(&mut self) {
        if !self.held.is_empty() || !self.held_logprobs.is_empty() {
            let text = std::mem::take(&mut self.held);
            let logprobs =
                (!self.held_logprobs.is_empty()).then(|| std::mem::take(&mut self.held_logprobs));
            self.pending.push_back(Ok(GenerationEvent::Delta {
                index: self.index,
                text,
                logprobs,
            }));
        }
    }

    /// Mark the choice finished (once), fixing its completion-token count.
    fn finish_with(&mut self, reason: FinishReason) {
        if self.state == ChoiceState::Done {
            return;
        }
        let mut tokens = self.observer.completion_tokens();
        if let Some(max) = self.max_tokens {
            tokens = tokens.min(max);
        }
        self.tokens.store(tokens, Ordering::Release);
        self.pending.push_back(Ok(GenerationEvent::Finished {
            index: self.index,
            reason,
        }));
        self.set_state(ChoiceState::Done);
    }

    /// Count one engine step; past `max_tokens` the choice ends here (mistral.rs can run one
    /// token over when a sequence should stop on its first token).
    fn step(&mut self) -> bool {
        self.steps += 1;
        self.max_tokens.is_some_and(|m| self.steps >= m)
    }
    fn set_state(&mut self, next: ChoiceState) {
        match (self.state, next) {
            (ChoiceState::Waiting, ChoiceState::Running) => {
                self.served.waiting.fetch_sub(1, Ordering::Relaxed);
                self.served.running.fetch_add(1, Ordering::Relaxed);
            }
            (ChoiceState::Waiting, ChoiceState::Done) => {
                self.served.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            (ChoiceState::Running, ChoiceState::Done) => {
                self.served.running.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.state = next;
    }

    fn handle(&mut self, response: Response) {
        let index = self.index;
        match response {
            Response::Chunk(chunk) => {
                self.set_state(ChoiceState::Running);
                if let Some(usage) = &chunk.usage {
                    self.engine_prompt_tokens
                        .store(usage.prompt_tokens, Ordering::Release);
                }
                for c in chunk.choices {
                    if self.state == ChoiceState::Done {
                        break;
                    }
                    let at_limit = self.step();
                    let logprobs = c.logprobs.map(|l| vec![convert_logprob(l)]);
                    let text = c.delta.content.unwrap_or_default();
                    if !text.is_empty() || logprobs.is_some() {
                        self.emit_text(text, logprobs);
                    }
                    if let Some(calls) = c.delta.tool_calls.filter(|c| !c.is_empty()) {
                        let calls = calls
                            .into_iter()
                            .map(|t| ToolCall {
                                id: t.id,
                                name: t.function.name,
                                arguments: t.function.arguments,
                            })
                            .collect();
                        self.pending
                            .push_back(Ok(GenerationEvent::ToolCalls { index, calls }));
                    }
                    if let Some(reason) = c.finish_reason {
                        self.finish(&reason);
                    } else if at_limit {
                        self.finish("length");
                    }
                }
            }
            Response::CompletionChunk(chunk) => {
                self.set_state(ChoiceState::Running);
                for c in chunk.choices {
                    if self.state == ChoiceState::Done {
                        break;
                    }
                    let at_limit = self.step();
                    let logprobs = c.logprobs.map(|l| vec![convert_logprob(l)]);
                    if !c.text.is_empty() || logprobs.is_some() {
                        self.emit_text(c.text, logprobs);
                    }
                    if let Some(reason) = c.finish_reason {
                        self.finish(&reason);
                    } else if at_limit {
                        self.finish("length");
                    }
                }
            }
            Response::ValidationError(e) => {
                self.fail(validation_error(&e.to_string(), self.is_chat))
            }
            Response::InternalError(e) => self.engine_failed(e.to_string()),
            Response::ModelError(msg, _) | Response::CompletionModelError(msg, _) => {
                self.engine_failed(msg)
            }
            other => self.fail(EngineError::Internal(format!(
                "unexpected engine response: {}",
                response_name(&other)
            ))),
        }
    }

    /// The engine stopped the sequence with an error: our own observer's stops (the model's
    /// sequence cap) become a normal finish or a context-length refusal.
    fn engine_failed(&mut self, message: String) {
        if self.observer.prompt_too_long() {
            let param = if self.is_chat { "messages" } else { "prompt" };
            self.fail(EngineError::ContextLength {
                param,
                message: format!(
                    "The prompt has {} tokens; model `{}` accepts at most {} tokens of prompt and completion.",
                    self.observer.prompt_tokens(),
                    self.served.info.id,
                    self.served.info.max_seq_len
                ),
            })
        } else if self.observer.capped() {
            self.finish("length");
        } else {
            self.fail(EngineError::Internal(message))
        }
    }

    fn finish(&mut self, reason: &str) {
        let reason = match reason {
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "canceled" => {
                self.fail(EngineError::Cancelled);
                return;
            }
            _ => FinishReason::Stop,
        };
        if self.state == ChoiceState::Done {
            return;
        }
        // Cut a stop sequence that arrived in the last piece, then release the rest.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min()
        {
            self.held.truncate(at);
        }
        self.flush_held();
        self.finish_with(reason);
    }

    fn fail(&mut self, err: EngineError) {
        self.pending.push_back(Err(err));
        self.set_state(ChoiceState::Done);
    }
}

impl Drop for ChoiceStream {
    fn drop(&mut self) {
        self.set_state(ChoiceState::Done);
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Done(_) => "Done",
        Response::CompletionDone(_) => "CompletionDone",
        Response::Embeddings { .. } => "Embeddings",
        _ => "other",
    }
}

fn validation_error(message: &str, is_chat: bool) -> EngineError {
    let param = if is_chat { "messages" } else { "prompt" };
    if message.contains("sequence length is greater") || message.contains("context") {
        EngineError::ContextLength {
            param,
            message: format!("The prompt is longer than the model's context: {message}"),
        }
    } else {
        EngineError::InvalidRequest {
            param,
            message: message.to_string(),
        }
    }
}

/// mistral.rs reports base-10 logprobs; OpenAI's are natural logs. Impossible tokens get
/// OpenAI's floor of -9999 (JSON has no -inf).
fn natural_log(log10: f32) -> f32 {
    let ln = log10 * std::f32::consts::LN_10;
    if ln.is_finite() {
        ln.max(-9999.0)
    } else {
        -9999.0
    }
}

fn convert_logprob(l: mistralrs::core::ResponseLogprob) -> TokenLogprob {
    let token = match &l.bytes {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => l.token,
    };
    TokenLogprob {
        bytes: Some(token.as_bytes().to_vec()),
        token,
        logprob: natural_log(l.logprob),
        top: l
            .top_logprobs
            .into_iter()
            .map(|t| {
                let text = t.bytes.clone().unwrap_or_else(|| t.token.to_string());
                TopLogprob {
                    bytes: Some(text.as_bytes().to_vec()),
                    token: text,
                    logprob: natural_log(t.logprob),
                }
            })
            .collect(),
    }
}

impl Stream for ChoiceStream {
    type Item = Result<GenerationEvent, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(Some(event));
            }
            if self.state == ChoiceState::Done {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(response)) => self.handle(response),
                Poll::Ready(None) => {
                    // mistral.rs ends a sequence without a last chunk when its final token is
                    // an incomplete UTF-8 piece: the sequence is finished all the same.
                    let sampled = self.observer.completion_tokens();
                    let reason = if self.max_tokens.is_some_and(|m| sampled >= m) {
                        "length"
                    } else {
                        "stop"
                    };
                    if sampled == 0 {
                        self.fail(EngineError::internal(
                            "the engine closed the stream before any token",
                        ));
                    } else {
                        self.finish(reason);
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// All choices of one request; ends with one `Usage` event (or at the first error).
struct MergedStream {
    choices: SelectAll<ChoiceStream>,
    observers: Vec<Arc<Observer>>,
    counts: Vec<Arc<AtomicUsize>>,
    prompt_counts: Vec<Arc<AtomicUsize>>,
    pending: VecDeque<Result<GenerationEvent, EngineError>>,
    finished: bool,
}

impl Stream for MergedStream {
    type Item = Result<GenerationEvent, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(event) = self.pending.pop_front() {
            return Poll::Ready(Some(event));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        match self.choices.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(event))) => Poll::Ready(Some(Ok(event))),
            Poll::Ready(Some(Err(e))) => {
                self.finished = true;
                self.choices = SelectAll::new();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.finished = true;
                let observed = self
                    .observers
                    .first()
                    .map(|o| o.prompt_tokens())
                    .unwrap_or(0);
                let reported = self
                    .prompt_counts
                    .first()
                    .map(|c| c.load(Ordering::Acquire))
                    .unwrap_or(0);
                if reported != 0 && reported != observed {
                    tracing::warn!(reported, observed, "prompt token counts disagree");
                }
                let usage = Usage {
                    prompt_tokens: if reported != 0 { reported } else { observed },
                    completion_tokens: self.counts.iter().map(|c| c.load(Ordering::Acquire)).sum(),
                };
                Poll::Ready(Some(Ok(GenerationEvent::Usage(usage))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Drain a stream into a finished generation.
/// The engine's own figures of one model (None if mistral.rs cannot say).
pub(crate) fn engine_figures(model: &mistralrs::Model) -> Option<crate::EngineFigures> {
    let stats = model.inner().engine_stats(None).ok()?;
    Some(crate::EngineFigures {
        dtype: stats.activation_dtype.map(|d| d.as_str().to_string()),
        running_sequences: stats.running,
        waiting_sequences: stats.waiting,
        sequences: stats.new_sequences,
        prefix_cache_hits: stats.prefix_cache_hits,
        prefix_cache_hit_tokens: stats.prefix_cache_hit_tokens,
        decode_steps: stats.decode_steps,
        decode_tokens: stats.decode_tokens,
        kv_cache: stats.kv_cache.map(|kv| crate::KvCacheFigures {
            blocks: kv.blocks,
            free_blocks: kv.free_blocks,
            block_size: kv.block_size,
        }),
    })
}

pub async fn collect(stream: &mut GenerationStream, n: usize) -> Result<Generation, EngineError> {
    let mut choices: Vec<Choice> = (0..n)
        .map(|index| Choice {
            index,
            text: String::new(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            logprobs: None,
        })
        .collect();
    let mut usage = None;
    while let Some(event) = stream.next().await {
        match event? {
            GenerationEvent::Delta {
                index,
                text,
                logprobs,
            } => {
                if let Some(c) = choices.get_mut(index) {
                    c.text.push_str(&text);
                    if let Some(lp) = logprobs {
                        c.logprobs.get_or_insert_with(Vec::new).extend(lp);
                    }
                }
            }
            GenerationEvent::ToolCalls { index, calls } => {
                if let Some(c) = choices.get_mut(index) {
                    c.tool_calls.extend(calls);
                }
            }
            GenerationEvent::Finished { index, reason } => {
                if let Some(c) = choices.get_mut(index) {
                    c.finish_reason = reason;
                }
            }
            GenerationEvent::Usage(u) => usage = Some(u),
        }
    }
    let usage = usage.ok_or_else(|| EngineError::internal("generation ended without usage"))?;
    Ok(Generation { choices, usage })
}

/// Prompt tokens as `start` will submit them: chat rendered with tools, text with special tokens.
pub async fn count_prompt_tokens(
    model: &mistralrs::Model,
    prompt: &Prompt,
) -> Result<usize, EngineError> {
    let (input, tools) = match prompt {
        Prompt::Chat {
            messages,
            tools,
            tool_choice,
        } => {
            let tools = to_mistral_tools(tools, tool_choice)?.0;
            let input = TokenizeInput::Chat {
                messages: messages.clone(),
                add_generation_prompt: true,
            };
            (input, tools)
        }
        Prompt::Text(text) => {
            let input = TokenizeInput::Text {
                text: text.clone(),
                add_special_tokens: true,
            };
            (input, None)
        }
    };
    Ok(tokenize_with_tools(model, input, tools).await?.len())
}

pub async fn tokenize(
    model: &mistralrs::Model,
    input: TokenizeInput,
) -> Result<Vec<u32>, EngineError> {
    tokenize_with_tools(model, input, None).await
}

/// Tokenize as the engine would, rendering `tools` into the chat template when given.
pub(crate) async fn tokenize_with_tools(
    model: &mistralrs::Model,
    input: TokenizeInput,
    tools: Option<Vec<mistralrs::Tool>>,
) -> Result<Vec<u32>, EngineError> {
    let invalid = |e: anyhow::Error| EngineError::InvalidRequest {
        param: "prompt",
        message: e.to_string(),
    };
    // A text model's template and tokenizer render here, on a blocking thread: a request
    // through the engine's channel would wait for the running step to end and for the
    // pipeline's lock (a whole decoding step under load) before admission could even start.
    let renderer = model
        .inner()
        .prompt_renderer(None)
        .map_err(EngineError::internal)?;
    if let Some(renderer) = renderer {
        let rendered = tokio::task::spawn_blocking(move || match input {
            TokenizeInput::Text {
                text,
                add_special_tokens,
            } => renderer.text(text, add_special_tokens),
            TokenizeInput::Chat {
                messages,
                add_generation_prompt,
            } => renderer.chat(
                chat_messages(&messages),
                add_generation_prompt,
                false,
                tools.unwrap_or_default(),
            ),
        })
        .await
        .map_err(EngineError::internal)?;
        return rendered.map_err(invalid);
    }
    let sender = sender_of(model)?;
    let (text, add_special_tokens, add_generation_prompt) = match input {
        TokenizeInput::Text {
            text,
            add_special_tokens,
        } => (Either::Right(text), add_special_tokens, false),
        TokenizeInput::Chat {
            messages,
            add_generation_prompt,
        } => (
            Either::Left(chat_messages(&messages)),
            false,
            add_generation_prompt,
        ),
    };
    let (tx, mut rx) = mpsc::channel(1);
    let request = Request::Tokenize(TokenizationRequest {
        text,
        tools,
        add_generation_prompt,
        add_special_tokens,
        enable_thinking: None,
        reasoning_effort: None,
        response: tx,
    });
    detached(async move {
        send(&sender, request).await?;
        rx.recv()
            .await
            .ok_or_else(|| EngineError::internal("tokenizer channel closed"))?
            .map_err(invalid)
    })
    .await
}

pub async fn detokenize(model: &mistralrs::Model, tokens: Vec<u32>) -> Result<String, EngineError> {
    let sender = sender_of(model)?;
    detached(async move {
        let (tx, mut rx) = mpsc::channel(1);
        send(
            &sender,
            Request::Detokenize(DetokenizationRequest {
                tokens,
                skip_special_tokens: false,
                response: tx,
            }),
        )
        .await?;
        rx.recv()
            .await
            .ok_or_else(|| EngineError::internal("detokenizer channel closed"))?
            .map_err(|e| EngineError::InvalidRequest {
                param: "tokens",
                message: e.to_string(),
            })
    })
    .await
}

fn sender_of(model: &mistralrs::Model) -> Result<mpsc::Sender<Request>, EngineError> {
    model
        .inner()
        .get_sender(None)
        .map_err(EngineError::internal)
}

async fn send(sender: &mpsc::Sender<Request>, request: Request) -> Result<(), EngineError> {
    sender
        .send(request)
        .await
        .map_err(|_| EngineError::internal("the model's engine has stopped"))
}

/// Embeddings through mistral.rs (Qwen3-Embedding, EmbeddingGemma): one request per input,
/// all in flight together.
pub async fn embed(
    model: &mistralrs::Model,
    served: &Served,
    input: EmbeddingInput,
) -> Result<Embeddings, EngineError> {
    reject_single_token_inputs(model, served, &input).await?;
    let messages: Vec<RequestMessage> = match input {
        EmbeddingInput::Texts(texts) => texts
            .into_iter()
            .map(|prompt| RequestMessage::Embedding { prompt })
            .collect(),
        EmbeddingInput::Tokens(batches) => batches
            .into_iter()
            .map(|prompt| RequestMessage::EmbeddingTokens { prompt })
            .collect(),
    };
    let sender = sender_of(model)?;
    detached(embed_all(sender, messages)).await
}

/// mistral.rs 0.8.1 builds no attention mask for a one-token sequence and its Qwen3-Embedding
/// forward pass then panics (`unreachable!`), killing the engine thread and every request in
/// flight on the model, other tenants' included. Refuse such inputs up front with a 400.
async fn reject_single_token_inputs(
    model: &mistralrs::Model,
    served: &Served,
    input: &EmbeddingInput,
) -> Result<(), EngineError> {
    let too_short = |index: usize, tokens: usize| EngineError::InvalidRequest {
        param: "input",
        message: format!(
            "Input {index} has {tokens} token{}; model `{}` needs at least 2 tokens per input.",
            if tokens == 1 { "" } else { "s" },
            served.info.id
        ),
    };
    match input {
        EmbeddingInput::Tokens(rows) => {
            if let Some((i, row)) = rows.iter().enumerate().find(|(_, row)| row.len() < 2) {
                return Err(too_short(i, row.len()));
            }
        }
        EmbeddingInput::Texts(texts) => {
            for (i, text) in texts.iter().enumerate() {
                let input = TokenizeInput::Text {
                    text: text.clone(),
                    add_special_tokens: true,
                };
                let tokens = tokenize(model, input).await?.len();
                if tokens < 2 {
                    return Err(too_short(i, tokens));
                }
            }
        }
    }
    Ok(())
}

async fn embed_all(
    sender: mpsc::Sender<Request>,
    messages: Vec<RequestMessage>,
) -> Result<Embeddings, EngineError> {
    let mut receivers = Vec::with_capacity(messages.len());
    for message in messages {
        let (tx, rx) = mpsc::channel(1);
        let request = NormalRequest {
            messages: message,
            sampling_params: SamplingParams::deterministic(),
            response: tx,
            return_logprobs: false,
            is_streaming: false,
            id: 0,
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: None,
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        };
        sender
            .send(Request::Normal(Box::new(request)))
            .await
            .map_err(|_| EngineError::internal("the model's engine has stopped"))?;
        receivers.push(rx);
    }
    // Drain every receiver, even after an error (see `detached`).
    let mut out = Embeddings {
        vectors: Vec::with_capacity(receivers.len()),
        prompt_tokens: 0,
    };
    let mut first_error = None;
    for mut rx in receivers {
        let result = match rx.recv().await {
            Some(Response::Embeddings {
                embeddings,
                prompt_tokens,
                ..
            }) => {
                out.vectors.push(embeddings);
                out.prompt_tokens += prompt_tokens;
                continue;
            }
            Some(Response::ValidationError(e)) => validation_error(&e.to_string(), false),
            Some(Response::InternalError(e)) => EngineError::Internal(e.to_string()),
            Some(other) => {
                EngineError::Internal(format!("unexpected response {}", response_name(&other)))
            }
            None => EngineError::internal("embedding channel closed"),
        };
        first_error.get_or_insert(result);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(out)
}
