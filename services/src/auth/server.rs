//! The server side: [`RequireSignatureLayer`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body_util::{BodyExt, Limited};
use pin_project::pin_project;
use skytower_transports::identity::PublicKey;
use tower::{BoxError, Layer, Service};

use super::{AuthConfig, AuthError, SharedVerifier, VerifiedKey, Verifier};
use crate::api::ApiError;

/// Requires a valid signature on every request through it (apply it to write routes with axum's
/// `route_layer`). Verified requests reach the inner service with their body buffered and a
/// [`VerifiedKey`] extension; the others are answered at once with a 401 (or 413/503)
/// [`ApiError`].
#[derive(Clone, Debug)]
pub struct RequireSignatureLayer {
    verifier: SharedVerifier,
}

impl RequireSignatureLayer {
    /// A layer with its own [`Verifier`] on the wall clock.
    pub fn new(config: AuthConfig) -> Self {
        Self::with_verifier(Arc::new(Verifier::new(config)))
    }

    /// A layer sharing `verifier` (and so its replay set) with other layers.
    pub fn with_verifier(verifier: SharedVerifier) -> Self {
        RequireSignatureLayer { verifier }
    }

    /// The verifier.
    pub fn verifier(&self) -> &SharedVerifier {
        &self.verifier
    }
}

impl<S> Layer<S> for RequireSignatureLayer {
    type Service = RequireSignature<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireSignature {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service of [`RequireSignatureLayer`].
#[derive(Clone, Debug)]
pub struct RequireSignature<S> {
    inner: S,
    verifier: SharedVerifier,
}

/// Reads the body and verifies the request: its parts, body and caller.
type Collect = Pin<Box<dyn Future<Output = Result<(Parts, Bytes, PublicKey), AuthError>> + Send>>;

impl<S, B> Service<Request<B>> for RequireSignature<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequireSignatureFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service handles this request; a fresh clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        let verifier = self.verifier.clone();
        let collect: Collect = Box::pin(async move {
            let limit = verifier.config().max_body;
            let body = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if is_length_limit(e.as_ref()) => {
                    return Err(AuthError::BodyTooLarge(limit));
                }
                Err(e) => return Err(AuthError::Body(e.to_string())),
            };
            let target = parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
            let pk = verifier
                .verify(&parts.method, target, &parts.headers, &body)
                .await?;
            Ok((parts, body, pk))
        });
        RequireSignatureFuture {
            state: State::Collect {
                collect,
                inner: Some(inner),
            },
        }
    }
}

/// Whether `e` or one of its sources is a body length limit (this layer's own, or an outer
/// `RequestBodyLimitLayer`'s, which reaches here wrapped in the body's error).
fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The response future of [`RequireSignature`]: reads the body, verifies (with a shared nonce
/// store, one round trip to it), then calls the inner service.
#[pin_project]
pub struct RequireSignatureFuture<S: Service<Request<Body>>> {
    #[pin]
    state: State<S>,
}

#[pin_project(project = StateProj)]
enum State<S: Service<Request<Body>>> {
    Collect {
        collect: Collect,
        inner: Option<S>,
    },
    Call {
        #[pin]
        future: S::Future,
    },
}

impl<S> Future for RequireSignatureFuture<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Output = Result<Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Collect { collect, inner } => {
                    let (mut parts, body, pk) = match ready!(collect.as_mut().poll(cx)) {
                        Ok(ok) => ok,
                        Err(e) => {
                            tracing::debug!(error = %e, "signed request refused");
                            return Poll::Ready(Ok(ApiError::from(e).into_response()));
                        }
                    };
                    parts.extensions.insert(VerifiedKey(pk));
                    let Some(mut service) = inner.take() else {
                        unreachable!("the inner service is taken once, on the Collect -> Call step")
                    };
                    let future = service.call(Request::from_parts(parts, Body::from(body)));
                    this.state.set(State::Call { future });
                }
                StateProj::Call { future } => return future.poll(cx),
            }
        }
    }
}
