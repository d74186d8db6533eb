//! Logs: the process's `tracing` subscriber.
//!
//! * `GATEHOUSE_LOG` is the filter (`tracing` env-filter syntax); the
//!   default is given by the command.
//! * `GATEHOUSE_LOG_FORMAT` is `text` (the default: one human-readable line
//!   per event, with the fields of the spans it happened in) or `json`: one
//!   JSON object per line with `timestamp`, `level`, `target`, `message`,
//!   `fields` (the event's other fields), `span` (the innermost span's
//!   name) and, on every line written while a request is served,
//!   `request_id` and `trace_id` (W3C, 32 hex digits).
//! * When traces are exported (`telemetry::trace`), the same spans feed
//!   OpenTelemetry.
//!
//! Everything goes to stderr.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{span, Event, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layered, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use super::{request, trace};

pub const FILTER_VAR: &str = "GATEHOUSE_LOG";
pub const FORMAT_VAR: &str = "GATEHOUSE_LOG_FORMAT";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LogSetupError {
    #[error("{FORMAT_VAR}: '{0}' is not a log format (text or json)")]
    Format(String),
    #[error("{FILTER_VAR}: '{0}' is not a valid filter ({1})")]
    Filter(String, String),
    #[error(transparent)]
    Trace(#[from] trace::TraceSetupError),
    #[error("logging was already set up in this process")]
    AlreadySetUp,
}

impl std::str::FromStr for LogFormat {
    type Err = LogSetupError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(LogSetupError::Format(other.to_string())),
        }
    }
}

/// What [`init`] needs from the command being run.
pub struct LogSettings<'a> {
    /// The filter when `GATEHOUSE_LOG` is not set.
    pub default_filter: &'a str,
    /// Export traces when configured (`serve` only: admin commands do not).
    pub traces: bool,
}

fn filter(default_filter: &str) -> Result<EnvFilter, LogSetupError> {
    match std::env::var(FILTER_VAR) {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| LogSetupError::Filter(v.clone(), e.to_string()))
        }
        _ => EnvFilter::try_new(default_filter)
            .map_err(|e| LogSetupError::Filter(default_filter.to_string(), e.to_string())),
    }
}

/// The subscriber's layers sit on the registry and the [`Gate`].
pub type Base = Layered<Gate, Registry>;

/// Installs the subscriber for the whole process, reading `GATEHOUSE_LOG`,
/// `GATEHOUSE_LOG_FORMAT` and (with `traces`) the OpenTelemetry variables.
/// A bad value is an error naming the variable.
pub fn init(settings: LogSettings<'_>) -> Result<(), LogSetupError> {
    let format: LogFormat = std::env::var(FORMAT_VAR).unwrap_or_default().parse()?;
    let traces = settings.traces && trace::export_configured();
    let gate = Gate {
        env: filter(settings.default_filter)?,
        traces,
    };
    // Colours only for a terminal, not in files or a journal.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let mut layers: Vec<Box<dyn Layer<Base> + Send + Sync>> = vec![match format {
        LogFormat::Text => fmt.fmt_fields(TextFields).boxed(),
        LogFormat::Json => fmt.event_format(JsonLines).boxed(),
    }];
    if traces {
        layers.push(trace::layer()?.boxed());
    }
    tracing_subscriber::registry()
        .with(gate)
        .with(layers)
        .try_init()
        .map_err(|_| LogSetupError::AlreadySetUp)
}

/// The one filter of the subscriber, for every layer: `GATEHOUSE_LOG`, and
/// whatever it says, the request spans (so that every line logged in a
/// request, a warning at `warn` level included, has the request's ids) and,
/// when traces are exported, Gatehouse's spans down to `debug`
/// (`trace::exported_span`).
///
/// A global filter rather than per-layer ones: `tracing-subscriber`'s
/// per-layer filters lose events and spans after `tracing::enabled!`
/// checks that no event follows (sqlx makes one per query), so lines went
/// missing on PostgreSQL.
pub struct Gate {
    env: EnvFilter,
    traces: bool,
}

impl Gate {
    /// Enabled whatever the filter says.
    fn always(&self, meta: &Metadata<'_>) -> bool {
        let request =
            meta.is_span() && meta.target() == request::TARGET && meta.name() == request::SPAN;
        request || (self.traces && trace::exported_span(meta))
    }
}

impl<S: Subscriber> Layer<S> for Gate {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.always(meta) {
            Interest::always()
        } else {
            Layer::<S>::register_callsite(&self.env, meta)
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.always(meta) || Layer::<S>::enabled(&self.env, meta, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let floor = if self.traces {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        };
        Layer::<S>::max_level_hint(&self.env).map(|hint| hint.max(floor))
    }

    // The env filter follows spans for its span-scoped directives.
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.env.on_new_span(attrs, id, ctx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.env.on_record(id, values, ctx)
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.env.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.env.on_exit(id, ctx)
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.env.on_close(id, ctx)
    }
}

/// The ids of the request a span serves, kept in the span's extensions
/// (for the JSON lines of events inside it).
#[derive(Clone, Debug)]
pub struct RequestIds {
    pub request_id: String,
    pub trace_id: String,
}

/// Attaches `ids` to `span` (a no-op when the span is disabled).
pub fn attach(span: &tracing::Span, ids: RequestIds) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<Registry>() {
            if let Some(data) = registry.span(id) {
                data.extensions_mut().replace(ids);
            }
        }
    });
}

/// Fields as `tracing`'s default text format writes them (`name=value`,
/// the message bare), less the `otel.*` ones, which only instruct the
/// OpenTelemetry layer (the span name, kind and status).
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || field.name().starts_with("otel.") {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value:?}")
        } else {
            write!(self.writer, "{sep}{}={value:?}", field.name())
        };
    }
}

/// One JSON object per event (see the module documentation).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut fields = JsonFields::default();
        event.record(&mut fields);

        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        // Keys in a fixed order, the time first (a map would sort them).
        let mut line = JsonLine::default();
        line.put("timestamp", timestamp)?;
        line.put("level", meta.level().as_str())?;
        line.put("target", meta.target())?;
        line.put("message", fields.message.take().unwrap_or_default())?;
        line.put("fields", serde_json::Value::Object(fields.values))?;
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = true;
            for span in scope {
                if innermost {
                    line.put("span", span.name())?;
                    innermost = false;
                }
                if let Some(ids) = span.extensions().get::<RequestIds>() {
                    line.put("request_id", &ids.request_id)?;
                    line.put("trace_id", &ids.trace_id)?;
                    break;
                }
            }
        }
        writeln!(writer, "{}}}", line.0)
    }
}

/// A JSON object written key by key.
#[derive(Default)]
struct JsonLine(String);

impl JsonLine {
    fn put(&mut self, key: &str, value: impl serde::Serialize) -> fmt::Result {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        let key = serde_json::to_string(key).map_err(|_| fmt::Error)?;
        let value = serde_json::to_string(&value).map_err(|_| fmt::Error)?;
        self.0.push_str(&key);
        self.0.push(':');
        self.0.push_str(&value);
        Ok(())
    }
}

/// An event's fields as JSON values; `message` apart.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    values: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name();
        if name == "message" {
            self.message = Some(match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else if !name.starts_with("log.") {
            // `log.*`: where a `log` record came from (already the target).
            self.values.insert(name.to_string(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn formats_are_text_or_json() {
        assert_eq!("".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        let err = "JSON".parse::<LogFormat>().unwrap_err().to_string();
        assert_eq!(
            err,
            "GATEHOUSE_LOG_FORMAT: 'JSON' is not a log format (text or json)"
        );
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buffer: &Buffer) -> Vec<serde_json::Value> {
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn json_lines_carry_the_request_ids_inside_a_request_only() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let gate = Gate {
            env: EnvFilter::new("warn"),
            traces: false,
        };
        let subscriber = tracing_subscriber::registry().with(gate).with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(port = 8080u64, "outside");
            let span = tracing::info_span!(target: request::TARGET, "request");
            attach(
                &span,
                RequestIds {
                    request_id: "req-1".into(),
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                },
            );
            let _in = span.enter();
            let inner = tracing::debug_span!("db");
            let _inner = inner.enter();
            tracing::warn!(ok = true, error = %"it \"broke\"", "inside");
            tracing::info!("filtered out");
        });
        let got = lines(&buffer);
        assert_eq!(got.len(), 2, "{got:?}");
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.lines().all(|l| l.starts_with("{\"timestamp\":\"")),
            "{text}"
        );
        assert_eq!(got[0]["message"], "outside");
        assert_eq!(got[0]["level"], "WARN");
        assert_eq!(got[0]["fields"]["port"], 8080);
        assert!(got[0].get("request_id").is_none());
        assert!(got[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(got[1]["message"], "inside");
        assert_eq!(got[1]["target"], module_path!());
        assert_eq!(got[1]["fields"]["ok"], true);
        assert_eq!(got[1]["fields"]["error"], "it \"broke\"");
        assert_eq!(got[1]["request_id"], "req-1");
        assert_eq!(got[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        // The db span is below the filter: the innermost span logged is
        // the request's.
        assert_eq!(got[1]["span"], "request");
    }

    #[test]
    fn text_lines_show_span_fields_but_not_otel_instructions() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(TextFields)
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                otel.name = "POST /token",
                request_id = "req-1",
                trace_id = tracing::field::Empty
            );
            span.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
            let _in = span.enter();
            tracing::info!(status = 200u64, "answered");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(
                "request{request_id=\"req-1\" trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"}:"
            ),
            "{text}"
        );
        assert!(text.contains("answered status=200"), "{text}");
        assert!(!text.contains("otel"), "{text}");
    }
}
