//! The closed-loop load the deploy, web and HTTPS benches drive: N
//! keep-alive HTTP/1.1 connections sending requests back to back (or, to
//! measure connection set-up, one request per connection), over plain TCP
//! or whatever a [`Connect`] opens.
// Each bench uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

pub(crate) async fn get_once(address: SocketAddr, host: &str) -> anyhow::Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request(host, "/")?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub(crate) fn request(host: &str, path: &str) -> anyhow::Result<Request<Empty<Bytes>>> {
    Ok(Request::get(path).header("host", host).body(Empty::new())?)
}

/// Opens the connections of a load.
pub(crate) trait Connect: Clone + Send + Sync + 'static {
    type Stream: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;

    fn connect(&self) -> impl Future<Output = anyhow::Result<Self::Stream>> + Send;
}

/// Plain TCP (`TCP_NODELAY`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tcp(pub(crate) SocketAddr);

impl Connect for Tcp {
    type Stream = TokioIo<tokio::net::TcpStream>;

    async fn connect(&self) -> anyhow::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(self.0).await?;
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }
}

/// How a load uses its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Requests back to back on each connection.
    KeepAlive,
    /// One request per connection (`Connection: close`), then a new
    /// connection: each latency includes connecting.
    NewConnection,
}

/// What a closed-loop run measured.
pub(crate) struct Load {
    pub(crate) requests: usize,
    pub(crate) errors: usize,
    /// Keep-alive connections the server ended with `Connection: close`
    /// (nginx after `keepalive_requests`): the response counts, the load
    /// reconnects, and that is not an error.
    pub(crate) reconnects: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl Load {
    pub(crate) fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// `connections` connections opened by `connect` sending requests back to
/// back for `duration`, kept alive or not (`reuse`).
pub(crate) async fn closed_loop_with<C: Connect>(
    connect: C,
    reuse: Reuse,
    host: &str,
    path: &str,
    connections: usize,
    duration: Duration,
) -> Load {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let host = host.to_string();
            let path = path.to_string();
            let connect = connect.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut reconnects = 0usize;
                'connect: while Instant::now() < deadline {
                    let connecting = Instant::now();
                    let Ok(stream) = connect.connect().await else {
                        errors += 1;
                        continue;
                    };
                    let Ok((mut sender, connection)) =
                        hyper::client::conn::http1::handshake(stream).await
                    else {
                        errors += 1;
                        continue;
                    };
                    tokio::spawn(connection);
                    while Instant::now() < deadline {
                        let Ok(mut request) = request(&host, &path) else {
                            break 'connect;
                        };
                        let sent = match reuse {
                            Reuse::KeepAlive => Instant::now(),
                            Reuse::NewConnection => {
                                request.headers_mut().insert(
                                    hyper::header::CONNECTION,
                                    hyper::header::HeaderValue::from_static("close"),
                                );
                                connecting
                            }
                        };
                        match sender.send_request(request).await {
                            Ok(response) if response.status().is_success() => {
                                let closing = closes(&response);
                                if response.into_body().collect().await.is_err() {
                                    errors += 1;
                                    continue 'connect;
                                }
                                latencies.push(sent.elapsed());
                                if closing && reuse == Reuse::KeepAlive {
                                    reconnects += 1;
                                    continue 'connect;
                                }
                            }
                            _ => {
                                errors += 1;
                                continue 'connect;
                            }
                        }
                        if reuse == Reuse::NewConnection {
                            continue 'connect;
                        }
                    }
                }
                (latencies, errors, reconnects)
            })
        })
        .collect();
    let mut load = Load {
        requests: 0,
        errors: 0,
        reconnects: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        if let Ok((latencies, errors, reconnects)) = task.await {
            load.requests += latencies.len();
            load.errors += errors;
            load.reconnects += reconnects;
            load.latencies.extend(latencies);
        }
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    load
}

/// Whether the server ends the connection after this response.
fn closes<B>(response: &hyper::Response<B>) -> bool {
    response
        .headers()
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// What one side of a comparison measured: the median throughput and p99
/// over the rounds, and the errors and reconnects of all rounds.
pub(crate) struct Side {
    pub(crate) rps: f64,
    pub(crate) p99: Duration,
    pub(crate) errors: usize,
    pub(crate) reconnects: usize,
    /// All requests answered, over all rounds.
    pub(crate) requests: usize,
    /// Each round's throughput, in order of size.
    pub(crate) rates: Vec<f64>,
}

fn median(loads: &[Load]) -> Side {
    let mut rates: Vec<f64> = loads.iter().map(Load::throughput).collect();
    rates.sort_by(f64::total_cmp);
    let mut p99s: Vec<Duration> = loads
        .iter()
        .map(|l| percentile(&l.latencies, 0.99))
        .collect();
    p99s.sort();
    Side {
        rps: rates[rates.len() / 2],
        p99: p99s[p99s.len() / 2],
        errors: loads.iter().map(|l| l.errors).sum(),
        reconnects: loads.iter().map(|l| l.reconnects).sum(),
        requests: loads.iter().map(|l| l.requests).sum(),
        rates,
    }
}

/// Connections of a race.
pub(crate) const CONNECTIONS: usize = 32;
/// How long each side runs per round.
pub(crate) const DURATION: Duration = Duration::from_secs(5);

/// The same closed-loop load on `path` through the router and on the host
/// baseline, rounds alternated (which goes first flips each round).
pub(crate) async fn race(
    router: SocketAddr,
    baseline: SocketAddr,
    host: &str,
    path: &str,
    rounds: usize,
) -> (Side, Side) {
    race_with(
        Tcp(router),
        Tcp(baseline),
        Reuse::KeepAlive,
        host,
        path,
        rounds,
    )
    .await
}

/// [`race`] over the connections `router` and `baseline` open, used as
/// `reuse` says.
pub(crate) async fn race_with<R: Connect, B: Connect>(
    router: R,
    baseline: B,
    reuse: Reuse,
    host: &str,
    path: &str,
    rounds: usize,
) -> (Side, Side) {
    let warm_up = Duration::from_secs(1);
    closed_loop_with(router.clone(), reuse, host, path, CONNECTIONS, warm_up).await;
    closed_loop_with(baseline.clone(), reuse, host, path, CONNECTIONS, warm_up).await;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..rounds.max(1) {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for through_router in order {
            if through_router {
                let load =
                    closed_loop_with(router.clone(), reuse, host, path, CONNECTIONS, DURATION)
                        .await;
                ours.push(load);
            } else {
                let load =
                    closed_loop_with(baseline.clone(), reuse, host, path, CONNECTIONS, DURATION)
                        .await;
                theirs.push(load);
            }
        }
    }
    (median(&ours), median(&theirs))
}
