//! Log setup shared by every entry point: the Lambda functions (JSON lines for CloudWatch)
//! and `relay serve` (plain text, or JSON with `--log-format json`). Lines go to stderr; the
//! level comes from `RUST_LOG` (default `info`). What is logged is the callers' business: ids
//! and hashes, never content, numbers, names or secrets.
//!
//! May depend on: tracing-subscriber only.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (Lambda, log shippers).
    Json,
    /// Human-readable lines; coloured only when stderr is a terminal, so a redirected log
    /// file holds no escape codes.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(format!(
                "unknown log format {other:?}: use \"text\" or \"json\""
            )),
        }
    }
}

/// Whether text lines get colour codes: only for a terminal.
pub fn ansi(format: LogFormat, stderr_is_terminal: bool) -> bool {
    format == LogFormat::Text && stderr_is_terminal
}

/// Installs the global subscriber. A second call is a no-op (tests start many apps in one
/// process).
pub fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(ansi(format, std::io::stderr().is_terminal()));
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .without_time()
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_text_on_a_terminal() {
        assert!(ansi(LogFormat::Text, true));
        assert!(!ansi(LogFormat::Text, false));
        assert!(!ansi(LogFormat::Json, true));
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
