//! Deciding which outcomes count as failures.

use crate::BoxError;

/// Decides whether the outcome of a call counts as a failure for the circuit breaker.
///
/// The outcome is returned to the caller unchanged either way; the classifier only decides what
/// is counted. The inner service's error has already been converted to a [`BoxError`].
///
/// Implemented by [`ErrorsAreFailures`] (the default), [`ServerErrorsAreFailures`] (for
/// `http::Response`s) and every `Fn(Result<&Res, &BoxError>) -> bool` closure:
///
/// ```
/// use skytower_layers::circuit_breaker::Classify;
/// use skytower_layers::BoxError;
///
/// // Count errors, and `Ok` responses below 0, as failures.
/// let classify = |res: Result<&i32, &BoxError>| res.map_or(true, |n| *n < 0);
/// assert!(classify.is_failure(Ok(&-1)));
/// assert!(!classify.is_failure(Ok(&1)));
/// ```
pub trait Classify<Res> {
    /// `true` when `result` is a failure.
    fn is_failure(&self, result: Result<&Res, &BoxError>) -> bool;
}

impl<F, Res> Classify<Res> for F
where
    F: Fn(Result<&Res, &BoxError>) -> bool,
{
    fn is_failure(&self, result: Result<&Res, &BoxError>) -> bool {
        self(result)
    }
}

/// The default classifier: every `Err` is a failure, every `Ok` a success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorsAreFailures;

impl<Res> Classify<Res> for ErrorsAreFailures {
    fn is_failure(&self, result: Result<&Res, &BoxError>) -> bool {
        result.is_err()
    }
}

/// A classifier for HTTP services: errors and `5xx` responses are failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerErrorsAreFailures;

impl<B> Classify<http::Response<B>> for ServerErrorsAreFailures {
    fn is_failure(&self, result: Result<&http::Response<B>, &BoxError>) -> bool {
        result.map_or(true, |res| res.status().is_server_error())
    }
}
