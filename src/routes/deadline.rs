//! A whole request within `server.request_timeout_secs`, on every listener. actix bounds only
//! the request head (`client_request_timeout`, set to the same value); this bounds the body:
//! a body that has not arrived by the deadline ends the read with an error, and whatever the
//! handler made of that, the answer is `408 Request Timeout` and the connection is closed
//! (a peer trickling bytes holds nothing for longer than the deadline).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpMessage, HttpResponse};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::edge::AuditNote;
use super::error::ob_body;
use crate::resources::codes;

/// How long a whole request may take to arrive, shared by the listeners' apps.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeout(pub Duration);

/// The request body, cut off at the deadline.
struct Bounded {
    inner: Payload,
    deadline: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl Stream for Bounded {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired.store(true, Ordering::Release);
                Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Wraps the request body in the deadline, and turns a request whose body missed it into a
/// 408 that closes the connection.
pub async fn deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // A request without a body (HTTP/1.1 or HTTP/2) has arrived whole with its head: nothing
    // to bound, and nothing added on the hot path of GETs.
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let limit = req
        .app_data::<Data<RequestTimeout>>()
        .map_or(Duration::from_secs(30), |t| t.0);
    let expired = Arc::new(AtomicBool::new(false));
    let bounded = Bounded {
        inner: payload,
        deadline: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
        expired: Arc::clone(&expired),
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(bounded),
    });
    let res = next.call(req).await?.map_into_boxed_body();
    if !expired.load(Ordering::Acquire) {
        return Ok(res);
    }
    let message = format!(
        "the request did not arrive within {} s; the connection is closed",
        limit.as_secs()
    );
    let status = actix_web::http::StatusCode::REQUEST_TIMEOUT;
    let mut timeout = HttpResponse::build(status).force_close().json(ob_body(
        status,
        codes::INVALID_FORMAT,
        &message,
        None,
    ));
    timeout
        .extensions_mut()
        .insert(AuditNote::denied("request_timeout"));
    Ok(res.into_response(timeout))
}
