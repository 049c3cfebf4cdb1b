//! The server's background tasks and their stop. Every task that runs beside the listeners
//! (presence timeouts, media retention, scheduled backups, memory release, the federation sender,
//! push delivery, delayed events) is spawned through [`BackgroundTasks`] with a [`Shutdown`] it
//! watches, and is awaited when the server stops, so none is cut off in the middle of its work (a
//! scheduled backup removes its partial folder) and none listens for signals of its own (the
//! pattern of tokio's mini-redis `shutdown.rs`).

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// What a background task watches: [`Shutdown::stopping`] returns once the server stops.
#[derive(Clone)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// Returns once the server is stopping (at once if it already is).
    pub async fn stopping(&self) {
        self.0.cancelled().await;
    }
}

/// The background tasks of one server.
#[derive(Clone, Default)]
pub struct BackgroundTasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl BackgroundTasks {
    /// Runs the task made by `task` until it ends by itself or, once [`Self::stop`] is called,
    /// notices the [`Shutdown`] it was given.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task(Shutdown(self.stop.clone())));
    }

    /// Tells every task to stop and waits until they have (at most `grace`).
    pub async fn stop(&self, grace: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running after {grace:?}; stopping anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn stop_waits_for_every_task_to_notice_and_finish() {
        let tasks = BackgroundTasks::default();
        let finished = Arc::new(AtomicBool::new(false));
        let seen = finished.clone();
        tasks.spawn(|shutdown| async move {
            shutdown.stopping().await;
            // Work after the signal (a backup cleaning up) is waited for too.
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen.store(true, Ordering::SeqCst);
        });
        assert!(!finished.load(Ordering::SeqCst));
        tasks.stop(Duration::from_secs(10)).await;
        assert!(finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_signal_is_given_up_after_the_grace() {
        let tasks = BackgroundTasks::default();
        tasks.spawn(|_| std::future::pending::<()>());
        let started = std::time::Instant::now();
        tasks.stop(Duration::from_millis(100)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
