//! Tasks that end with their owner.

/// Aborts its task when dropped: a task that serves another one's subscriptions ends when that
/// one ends or is aborted, instead of running on unowned.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
