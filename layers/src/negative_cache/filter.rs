//! Deciding which errors mark a key bad.

use std::error::Error;

use tower::timeout::error::Elapsed;

use super::Cancelled;
use crate::BoxError;

/// Decides whether an error of the inner service is a failure of the key (and so marks it
/// bad) or not (for example the caller's own cancellation).
///
/// Implemented for every `Fn(&BoxError) -> bool` closure and for [`IgnoreCancelled`] (the
/// default). Only errors are filtered; a response future dropped before completion never
/// records anything.
pub trait FailureFilter {
    /// Returns `true` if `error` should mark the request's key bad.
    fn is_failure(&self, error: &BoxError) -> bool;
}

impl<F> FailureFilter for F
where
    F: Fn(&BoxError) -> bool,
{
    fn is_failure(&self, error: &BoxError) -> bool {
        self(error)
    }
}

/// The default [`FailureFilter`]: every error is a failure except the caller's own
/// cancellation, that is an error with a [`Cancelled`] in its `source()` chain.
///
/// With [`elapsed_is_cancellation(true)`](IgnoreCancelled::elapsed_is_cancellation), tower's
/// [`Elapsed`] (from `tower::timeout`) is ignored too. That is off by default because a
/// `Timeout` *inside* the negative cache is an attempt timeout: the key did not answer in time,
/// a real failure of it. A caller's deadline set *outside* (a `Timeout` wrapping the negative
/// cache) drops the response future when it fires, and a dropped future is never recorded, so
/// it needs no filtering. Opt in only when `Elapsed` errors reaching this layer come from a
/// caller-set deadline (for example one propagated from an upstream request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoreCancelled {
    elapsed: bool,
}

impl IgnoreCancelled {
    /// Ignores [`Cancelled`] only.
    pub const fn new() -> Self {
        IgnoreCancelled { elapsed: false }
    }

    /// Also ignore [`Elapsed`] (default `false`).
    pub const fn elapsed_is_cancellation(mut self, yes: bool) -> Self {
        self.elapsed = yes;
        self
    }
}

impl FailureFilter for IgnoreCancelled {
    fn is_failure(&self, error: &BoxError) -> bool {
        let mut cur: Option<&(dyn Error + 'static)> = Some(&**error);
        while let Some(err) = cur {
            if err.is::<Cancelled>() || (self.elapsed && err.is::<Elapsed>()) {
                return false;
            }
            cur = err.source();
        }
        true
    }
}
