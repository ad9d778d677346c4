//! Streamed answers (`cat`) that can fail after the 200: as kubo, the
//! response declares `Trailer: X-Stream-Error` and a failure ends the
//! chunked body with that trailer carrying the message.
//!
//! hyper writes trailers only to a client that sent `TE: trailers`. To any
//! other client a failure aborts the connection before the last chunk, so
//! the body is incomplete, never a clean but cut-off 200.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use http_body::Frame;

use crate::Error;

/// kubo's trailer for an error after the 200 (go-ipfs-cmds' `StreamErrHeader`).
pub const STREAM_ERROR: HeaderName = HeaderName::from_static("x-stream-error");

/// Whether the request accepts trailers (`TE: trailers`).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// A 200 streaming `body` with kubo's headers for streamed output.
pub fn streamed(
    body: impl Stream<Item = Result<Bytes, Error>> + Send + 'static,
    trailers: bool,
    content_type: &'static str,
) -> Response {
    let body = TrailerBody {
        inner: Some(Box::pin(body)),
        trailers,
    };
    let mut r = Body::new(body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("X-Stream-Output", HeaderValue::from_static("1"));
    h.insert(header::TRAILER, HeaderValue::from_static("X-Stream-Error"));
    r
}

struct TrailerBody {
    /// `None` once the stream ended or failed.
    inner: Option<BoxStream<'static, Result<Bytes, Error>>>,
    trailers: bool,
}

impl http_body::Body for TrailerBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.inner = None;
                tracing::warn!(error = %e, "a streamed answer failed after its 200");
                if !self.trailers {
                    return Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))));
                }
                let mut t = HeaderMap::new();
                t.insert(STREAM_ERROR, header_value(&e.to_string()));
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none()
    }
}

/// `msg` as a header value: control characters become spaces.
fn header_value(msg: &str) -> HeaderValue {
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("stream failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_trailers_is_recognised_in_lists() {
        let mut h = HeaderMap::new();
        assert!(!accepts_trailers(&h));
        h.insert(header::TE, HeaderValue::from_static("gzip, Trailers"));
        assert!(accepts_trailers(&h));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        assert!(!accepts_trailers(&h));
    }

    #[test]
    fn messages_become_valid_header_values() {
        assert_eq!(header_value("a\nb\tc"), "a b c");
        assert_eq!(
            header_value("fetching Qm: timed out"),
            "fetching Qm: timed out"
        );
    }
}
