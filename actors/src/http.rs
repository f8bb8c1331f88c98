//! The optional HTTP listener (`metrics_listen`, off by default): an
//! actix-web server on its own threads, apart from the client workers, so a
//! scrape never waits behind client traffic and vice versa.
//!
//! - `GET /metrics`: [`crate::metrics::Metrics::render`], the Prometheus
//!   text format.
//! - `GET /healthz`: `200 ok` while the node runs (a liveness probe).
//! - `GET /readyz`: `200 ready` while the node accepts connections, `503
//!   draining` once shutdown began (a readiness probe, so a load balancer
//!   stops sending clients to a node that is going away).
//!
//! Anything else is `404`. The listener is plain HTTP without
//! authentication: bind it to an address only the monitoring can reach.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_rt::Arbiter;
use actix_web::http::header::{ContentType, CONTENT_TYPE};
use actix_web::{web, App, HttpResponse, HttpServer};
use slog::info;

use crate::env::Env;

/// Starts the HTTP listener if `metrics_listen` is set; returns the address
/// it is bound to. Must run inside the node's actix `System`. Binding
/// happens before this returns, so a bad or busy address is an error here.
pub fn start(env: &Arc<Env>) -> std::io::Result<Option<SocketAddr>> {
    let node = &env.node;
    let Some(addr) = node.settings.metrics_listen else {
        return Ok(None);
    };
    let socket = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics_listen {addr}: {e}")))?;
    let bound = socket.local_addr()?;
    let data = web::Data::new(env.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    // Scrapes and probes are a few requests a second: one worker thread.
    .workers(1)
    // The node handles SIGTERM/SIGINT itself (it drains); the HTTP server
    // must keep answering `/readyz` with 503 meanwhile.
    .disable_signals()
    .listen(socket)?
    .run();
    Arbiter::new().spawn(async move {
        let _ = server.await;
    });
    info!(node.log, "metrics listening"; "addr" => %bound);
    Ok(Some(bound))
}

async fn metrics(env: web::Data<Arc<Env>>) -> HttpResponse {
    let text = env.node.metrics.render(&env.stats());
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, crate::metrics::CONTENT_TYPE))
        .body(text)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

async fn readyz(env: web::Data<Arc<Env>>) -> HttpResponse {
    if env.node.metrics.is_ready() {
        HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type(ContentType::plaintext())
            .body("draining\n")
    }
}
