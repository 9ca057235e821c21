//! Logs to stderr and, when an OTLP endpoint is configured, spans to an
//! OpenTelemetry collector.
//!
//! Design decision: the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns export on, so TensorGuard
//! plugs into an existing collector the way every other OTel service does.
//! The stderr log and the exporter filter separately: `-v` changes what an
//! operator reads, never what the collector receives (info-level spans of
//! our own crates). Services (coordinator, agent) say at start-up whether
//! spans are exported, so missing traces are never a silent surprise.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the exporter alive; flushes pending spans when dropped.
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    /// What start-up should tell the operator about trace export.
    pub status: String,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider.take() {
            // Flushes the batch; an unreachable collector only costs a timeout.
            let _ = p.shutdown();
        }
    }
}

fn endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

fn stderr_filter(verbose: u8) -> tracing_subscriber::EnvFilter {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::EnvFilter::try_from_env("TENSORGUARD_LOG")
        // libp2p's own chatter (e.g. Kademlia finding no bootstrap peers in a
        // star-shaped fleet) is not the operator's business below -vv.
        .unwrap_or_else(|_| {
            let quiet = if verbose < 2 {
                ",libp2p_kad=error,libp2p_swarm=error"
            } else {
                ""
            };
            tracing_subscriber::EnvFilter::new(format!("{level}{quiet}"))
        })
}

/// Installs logging (and OTLP export when configured) for a process whose
/// spans are reported as `service` (e.g. `tensorguard-coordinator`).
pub fn init(verbose: u8, service: &str) -> Telemetry {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_filter(stderr_filter(verbose));
    let Some(endpoint) = endpoint() else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Telemetry {
            #[cfg(feature = "otlp")]
            provider: None,
            status: "traces: not exported (no OTLP endpoint: set OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://127.0.0.1:4318)".into(),
        };
    };
    #[cfg(feature = "otlp")]
    {
        match exporter(service) {
            Ok(provider) => {
                use opentelemetry::trace::TracerProvider as _;
                let tracer = provider.tracer("tensorguard");
                let spans = tracing_subscriber::EnvFilter::new(
                    "warn,tensorguard=info,tg_coordinator=info,tg_agent=info,tg_inproc=info,tg_net=info",
                );
                let otel = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(spans);
                let _ = tracing_subscriber::registry()
                    .with(fmt)
                    .with(otel)
                    .try_init();
                Telemetry {
                    provider: Some(provider),
                    status: format!("traces: exported over OTLP/HTTP to {endpoint} as {service}"),
                }
            }
            Err(e) => {
                let _ = tracing_subscriber::registry().with(fmt).try_init();
                Telemetry {
                    provider: None,
                    status: format!(
                        "traces: NOT exported — the OTLP exporter for {endpoint} could not be built: {e}"
                    ),
                }
            }
        }
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = service;
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        Telemetry {
            status: format!("traces: NOT exported to {endpoint}: this build has no `otlp` feature"),
        }
    }
}

#[cfg(feature = "otlp")]
fn exporter(service: &str) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    // The endpoint comes from the standard environment variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
