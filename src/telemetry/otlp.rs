//! The OTLP export: traces and metrics as OTLP/HTTP with JSON bodies to `<endpoint>/v1/traces`
//! and `<endpoint>/v1/metrics`.
//!
//! The SDK's batch span processor and periodic metric reader run on their own threads; the HTTP
//! requests they make run on a small runtime of their own (one worker), so exporting never
//! blocks the server's runtime, works before that runtime exists and after it has stopped, and
//! flushing or shutting down from inside an async context cannot deadlock. `http://` and
//! `https://` endpoints work (rustls with the system's root certificates).
//!
//! Configuration beyond the endpoint follows the standard variables the SDK reads:
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_METRIC_EXPORT_INTERVAL`
//! (default 60 s), `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`.

use super::SERVICE_NAME;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::Arc;
use std::time::Duration;

/// An HTTP client for the exporters that runs every request on its own runtime.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context; this never does.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let Some(rt) = self.runtime.as_ref() else {
            return Err("the OTLP client is shut down".into());
        };
        let http = self.http.clone();
        let task = rt.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = http.execute(request).await?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(answer.body(body)?)
        });
        task.await.map_err(|e| Box::new(e) as HttpError)?
    }
}

/// The installed providers.
pub(super) struct Pipeline {
    pub tracer: SdkTracerProvider,
    pub meter: SdkMeterProvider,
}

/// Builds the trace and metric pipelines for a collector at `endpoint` (e.g.
/// `http://127.0.0.1:4318`).
pub(super) fn build(endpoint: &str) -> Result<Pipeline, String> {
    let base = endpoint.trim_end_matches('/');
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weiche-otlp")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the OTLP export runtime: {e}"))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
    let client: Arc<dyn HttpClient> = Arc::new(Client {
        http,
        runtime: Some(runtime),
    });
    let resource = Resource::builder().with_service_name(SERVICE_NAME).build();
    let spans = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_shared_http_client(client.clone())
        .build()
        .map_err(|e| format!("cannot build the OTLP span exporter: {e}"))?;
    let metrics = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{base}/v1/metrics"))
        .with_shared_http_client(client)
        .build()
        .map_err(|e| format!("cannot build the OTLP metric exporter: {e}"))?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let meter = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics).build())
        .with_resource(resource)
        .build();
    Ok(Pipeline { tracer, meter })
}
