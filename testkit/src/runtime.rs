//! A tokio runtime for tests that drive pigeon's async adapters (the
//! Redis bridge, the request guard) from synchronous test code: a
//! current-thread runtime driven by a thread of its own (of the namespace
//! it was made in), so the adapters keep running while the test thread
//! blocks on lab operations (stopping or restarting Redis, sleeping).

// Panicking with a message is how this harness reports a failed set-up.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The runtime; stopped (its driver thread joined) on drop.
pub struct TestRuntime {
    /// Its handle (to enter it, e.g. for `RequestGuard::spawn`).
    pub handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    driver: Option<thread::JoinHandle<()>>,
    log: Option<Arc<Mutex<Vec<u8>>>>,
}

/// Where a logged runtime's tasks write their log lines.
#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TestRuntime {
    /// A runtime whose tasks log nowhere, unless `PIGEON_TEST_LOG` names a
    /// filter (e.g. `pigeon=debug`): then everything logs to stderr.
    pub fn new() -> Self {
        if let Ok(filter) = std::env::var("PIGEON_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .try_init();
        }
        Self::build(None)
    }

    /// A runtime whose tasks' log lines (INFO and above) are kept, for
    /// tests of what an adapter logs ([`Self::log`]).
    pub fn logged() -> Self {
        Self::build(Some(Arc::new(Mutex::new(Vec::new()))))
    }

    fn build(log: Option<Arc<Mutex<Vec<u8>>>>) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let sink = log.clone().map(LogSink);
        let driver = thread::spawn(move || {
            let run = || {
                rt.block_on(async {
                    let _ = stopped.await;
                })
            };
            match sink {
                Some(sink) => {
                    let subscriber = tracing_subscriber::fmt()
                        .with_ansi(false)
                        .with_max_level(tracing::Level::INFO)
                        .with_writer(move || sink.clone())
                        .finish();
                    tracing::subscriber::with_default(subscriber, run);
                }
                None => run(),
            }
        });
        TestRuntime {
            handle,
            stop: Some(stop),
            driver: Some(driver),
            log,
        }
    }

    /// Runs `future` to completion on the calling thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    /// Spawns `future` on the driver thread.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// What the tasks of a [`Self::logged`] runtime logged so far (empty
    /// for others).
    pub fn log(&self) -> String {
        self.log.as_ref().map_or_else(String::new, |log| {
            String::from_utf8_lossy(&log.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned()
        })
    }
}

impl Default for TestRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
    }
}
