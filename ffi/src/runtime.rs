//! The one tokio runtime and the logging of the exported SDK, set up once per process.
//!
//! Apps call [`init_platform`] once at start-up to choose the worker threads and where logs
//! go (a [`LogSink`] of their own, such as Android's logcat or Apple's unified log, or standard
//! error). Without it, the first call that needs the runtime starts one with the defaults and
//! no logging.
//!
//! Every async export runs its work on this runtime through [`run`], so it does not matter
//! which foreign executor polls the future (Kotlin coroutines, Swift tasks, Python asyncio). A
//! panic in that work comes back as the call's `Internal` error, never across the FFI.
//! [`shutdown_platform`] stops the runtime at process exit, so that no SDK thread calls into an
//! interpreter that is shutting down.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;

/// How much the SDK logs. Logs never hold secrets: no keys, tokens or signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Failures only.
    Error,
    /// Failures and anomalies.
    Warn,
    /// Session life: logins, reconnects, session ends.
    Info,
    /// Also each retry and request.
    Debug,
    /// Everything, including the transport's own logs.
    Trace,
}

/// The process-wide settings of [`init_platform`].
#[derive(Debug, Clone, uniffi::Record)]
pub struct PlatformConfig {
    /// Worker threads of the SDK's runtime; 0 picks 2.
    #[uniffi(default = 0)]
    pub worker_threads: u32,
    /// The most detailed level logged.
    pub log_level: LogLevel,
}

/// Where the app wants the SDK's log lines, one call per line.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One log line: its level, the Rust module it came from, and the message with its fields.
    fn log(&self, level: LogLevel, target: String, message: String);
}

/// Why [`init_platform`] failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum PlatformError {
    /// The runtime was already started, by an earlier `init_platform` or by a first call.
    /// Call `init_platform` once, before anything else.
    #[error("the SDK's runtime is already running: call init_platform once, first")]
    AlreadyInitialized,
    /// The runtime's threads could not be started, or it cannot be shut down from here.
    #[error("the SDK's runtime: {0}")]
    Runtime(String),
}

/// The SDK's runtime over the life of the process.
enum Platform {
    /// Nothing started it yet.
    NotStarted,
    /// Running.
    Running(tokio::runtime::Runtime),
    /// [`shutdown_platform`] stopped it; SDK calls fail from then on.
    ShutDown,
}

static PLATFORM: Mutex<Platform> = Mutex::new(Platform::NotStarted);

fn platform() -> std::sync::MutexGuard<'static, Platform> {
    // The state is replaced whole under the lock; a panic cannot leave it half-written.
    PLATFORM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the SDK's runtime with `config` and sends its logs to `log_sink`, or to standard
/// error without one. Call it once, before any other call.
#[uniffi::export(default(log_sink = None))]
pub fn init_platform(
    config: PlatformConfig,
    log_sink: Option<Arc<dyn LogSink>>,
) -> Result<(), PlatformError> {
    let mut platform = platform();
    if !matches!(*platform, Platform::NotStarted) {
        return Err(PlatformError::AlreadyInitialized);
    }
    *platform = Platform::Running(build_runtime(config.worker_threads)?);
    install_logging(config.log_level, log_sink);
    Ok(())
}

/// Stops the SDK's runtime, waiting up to `timeout_ms` for its threads to finish what they are
/// doing (including calls into the app, such as listeners). Sessions end with it, and every
/// later SDK call fails with an `Internal` error.
///
/// For process exit: an interpreter that is shutting down must not be called from SDK threads
/// any more (the Python package registers this with `atexit`). Call it from an app thread, not
/// from a listener.
#[uniffi::export]
pub fn shutdown_platform(timeout_ms: u64) -> Result<(), PlatformError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(PlatformError::Runtime(
            "it cannot be shut down from one of its own threads".into(),
        ));
    }
    let previous = std::mem::replace(&mut *platform(), Platform::ShutDown);
    if let Platform::Running(runtime) = previous {
        runtime.shutdown_timeout(Duration::from_millis(timeout_ms));
    }
    Ok(())
}

fn build_runtime(worker_threads: u32) -> Result<tokio::runtime::Runtime, PlatformError> {
    let threads = if worker_threads == 0 {
        2
    } else {
        worker_threads as usize
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("unibus")
        .enable_all()
        .build()
        .map_err(|e| PlatformError::Runtime(e.to_string()))
}

/// The running runtime's handle, started with the defaults on first use.
fn handle() -> Result<tokio::runtime::Handle, Unfinished> {
    let mut platform = platform();
    if matches!(*platform, Platform::NotStarted) {
        let runtime = build_runtime(0).map_err(|e| Unfinished(e.to_string()))?;
        *platform = Platform::Running(runtime);
    }
    match &*platform {
        Platform::Running(runtime) => Ok(runtime.handle().clone()),
        _ => Err(Unfinished(
            "the SDK's runtime was shut down (shutdown_platform)".into(),
        )),
    }
}

/// SDK work that could not finish: it panicked, or the runtime is shut down. It becomes the
/// failing call's `Internal` error.
pub(crate) struct Unfinished(pub String);

/// Runs `work` on the SDK's runtime and waits for it from whatever executor polls this.
pub(crate) async fn run<T, E>(
    work: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Unfinished> + Send + 'static,
{
    match handle()?.spawn(work).await {
        Ok(outcome) => outcome,
        Err(error) => Err(Unfinished(format!("the SDK task failed: {error}")).into()),
    }
}

/// Spawns `work` on the SDK's runtime without waiting for it.
pub(crate) fn spawn(
    work: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, Unfinished> {
    Ok(handle()?.spawn(work))
}

fn install_logging(level: LogLevel, sink: Option<Arc<dyn LogSink>>) {
    let filter = match level {
        LogLevel::Off => tracing_subscriber::filter::LevelFilter::OFF,
        LogLevel::Error => tracing_subscriber::filter::LevelFilter::ERROR,
        LogLevel::Warn => tracing_subscriber::filter::LevelFilter::WARN,
        LogLevel::Info => tracing_subscriber::filter::LevelFilter::INFO,
        LogLevel::Debug => tracing_subscriber::filter::LevelFilter::DEBUG,
        LogLevel::Trace => tracing_subscriber::filter::LevelFilter::TRACE,
    };
    let format = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_level(sink.is_none())
        .with_target(sink.is_none());
    let registry = tracing_subscriber::registry().with(filter);
    // A process may already have a global subscriber (the app's own Rust code): keep it.
    let _ = match sink {
        Some(sink) => tracing::subscriber::set_global_default(
            registry.with(format.with_writer(SinkMaker(sink))),
        ),
        None => tracing::subscriber::set_global_default(
            registry.with(format.with_writer(std::io::stderr)),
        ),
    };
}

/// Writes each formatted log line to the app's [`LogSink`].
struct SinkWriter {
    sink: Arc<dyn LogSink>,
    level: LogLevel,
    target: String,
    line: Vec<u8>,
}

struct SinkMaker(Arc<dyn LogSink>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SinkMaker {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        self.writer(LogLevel::Info, String::new())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SinkWriter {
        let level = match *meta.level() {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        };
        self.writer(level, meta.target().to_owned())
    }
}

impl SinkMaker {
    fn writer(&self, level: LogLevel, target: String) -> SinkWriter {
        SinkWriter {
            sink: Arc::clone(&self.0),
            level,
            target,
            line: Vec::new(),
        }
    }
}

impl std::io::Write for SinkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SinkWriter {
    /// The formatter writes one event per writer; it is complete when the writer goes.
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let message = String::from_utf8_lossy(&self.line).trim_end().to_owned();
        let target = std::mem::take(&mut self.target);
        self.sink.log(self.level, target, message);
    }
}
