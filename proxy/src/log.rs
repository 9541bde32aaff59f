//! Process logging with `tracing` (filter with `RUST_LOG`, default `info`),
//! as text or one JSON object per line (`log.format`).

use tracing_subscriber::EnvFilter;
use weir_control::config::LogFormat;

/// Installs the global subscriber once; later calls are no-ops.
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Text => fmt.try_init(),
        LogFormat::Json => fmt.json().with_current_span(false).try_init(),
    };
}

/// `e` and its sources, for a log line a person can act on (a TLS failure
/// says which certificate problem, a connect failure which address).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
