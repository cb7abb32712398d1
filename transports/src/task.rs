//! Task ownership: every spawned task has an owner that ends it.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use skytower_transports::task::AbortOnDrop;
//!
//! let task = tokio::spawn(std::future::pending::<()>());
//! let owner = AbortOnDrop::new(&task);
//! drop(owner); // the task is aborted
//! assert!(task.await.unwrap_err().is_cancelled());
//! # });
//! ```

use tokio::task::{AbortHandle, JoinHandle};

/// Aborts a spawned task when dropped: hold it where the task's owner lives.
#[derive(Debug)]
pub struct AbortOnDrop(pub AbortHandle);

impl AbortOnDrop {
    /// Owns the task behind `handle` (the handle itself can still be awaited).
    pub fn new<T>(handle: &JoinHandle<T>) -> Self {
        AbortOnDrop(handle.abort_handle())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
