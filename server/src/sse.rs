//! Server-sent events as OpenAI streams them: `data: {json}` events, keep-alive comments while
//! waiting, one `data: {"error":…}` event if something fails after the headers went out, and
//! `data: [DONE]` last. Dropping the body (client gone) drops the inner stream, which cancels
//! the engine request.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures::Stream;
use serde::Serialize;

use crate::error::ApiError;

/// One thing to send: a JSON event or an error event (which ends the stream).
pub enum SseEvent {
    Data(Bytes),
    Error(ApiError),
}

impl SseEvent {
    pub fn json<T: Serialize>(value: &T) -> SseEvent {
        match serde_json::to_vec(value) {
            Ok(json) => SseEvent::Data(frame(&json)),
            Err(_) => SseEvent::Error(ApiError::internal()),
        }
    }
}

fn frame(json: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(json.len() + 8);
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

pub type EventStream = Pin<Box<dyn Stream<Item = SseEvent>>>;

struct SseBody {
    inner: EventStream,
    keep_alive: tokio::time::Interval,
    finished: bool,
}

impl Stream for SseBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(SseEvent::Data(bytes))) => {
                self.keep_alive.reset();
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(SseEvent::Error(err))) => {
                self.finished = true;
                let body = err.body().to_string();
                let mut out = frame(body.as_bytes()).to_vec();
                out.extend_from_slice(b"data: [DONE]\n\n");
                Poll::Ready(Some(Ok(Bytes::from(out))))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Ok(Bytes::from_static(b"data: [DONE]\n\n"))))
            }
            Poll::Pending => match self.keep_alive.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Ok(Bytes::from_static(b": keep-alive\n\n")))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// A 200 `text/event-stream` response over `events`.
pub fn response(events: EventStream, keep_alive: Duration) -> HttpResponse {
    let keep_alive = keep_alive.max(Duration::from_millis(100));
    let mut interval =
        tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(SseBody {
            inner: events,
            keep_alive: interval,
            finished: false,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    async fn next_frame(body: &mut Pin<Box<impl MessageBody>>) -> Option<Bytes> {
        futures::future::poll_fn(|cx| body.as_mut().poll_next(cx))
            .await
            .map(|r| r.ok().unwrap())
    }

    #[actix_web::test]
    async fn a_waiting_stream_sends_keep_alive_comments_then_data_and_done() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<SseEvent>();
        let res = response(Box::pin(rx), Duration::from_millis(100));
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-cache");
        let mut body = Box::pin(res.into_body());
        // Nothing to send yet: the first frame is a keep-alive comment.
        assert_eq!(next_frame(&mut body).await.unwrap(), ": keep-alive\n\n");
        tx.unbounded_send(SseEvent::json(&serde_json::json!({"a": 1})))
            .unwrap();
        assert_eq!(next_frame(&mut body).await.unwrap(), "data: {\"a\":1}\n\n");
        tx.unbounded_send(SseEvent::Error(ApiError::internal()))
            .unwrap();
        let last = next_frame(&mut body).await.unwrap();
        let text = String::from_utf8(last.to_vec()).unwrap();
        assert!(text.starts_with("data: {\"error\":{"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(next_frame(&mut body).await.is_none());
    }
}
