//! Following the store-wide change counter.

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The latest change counter a background task has observed. Dropping the feed stops the task.
///
/// A feed may skip values (it reports the latest, not every one) and, on PostgreSQL, may miss
/// a notification while its connection is re-established; routers therefore also poll the
/// counter on a timer, and treat the feed only as a way to learn of changes sooner.
pub struct ChangeFeed {
    receiver: watch::Receiver<i64>,
    task: JoinHandle<()>,
}

impl ChangeFeed {
    pub(crate) fn new(receiver: watch::Receiver<i64>, task: JoinHandle<()>) -> ChangeFeed {
        ChangeFeed { receiver, task }
    }

    /// Waits until the counter differs from the last value returned, and returns it.
    /// Returns `None` if the feed's task ended.
    pub async fn changed(&mut self) -> Option<i64> {
        self.receiver.changed().await.ok()?;
        Some(*self.receiver.borrow_and_update())
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}
