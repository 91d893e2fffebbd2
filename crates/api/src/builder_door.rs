//! The builder door's transport: gRPC over TLS on TCP.
//!
//! The daemon serves it with a self-signed certificate; builders know that
//! certificate's SHA-256 from their join token and accept no other (no CA,
//! no name check: the pin is the identity). Builders authenticate with the
//! credential their registration returned, in every request's metadata
//! (`authorization: Builder <name>:<credential>`), over that pinned channel.
//! Both ends keep HTTP/2 pings going, so a peer that vanishes is noticed
//! within seconds even when no message is due.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated messages, client and server of the builder door.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    tonic::include_proto!("launchway.builder.v1");
}

pub use proto::build_host_client::BuildHostClient;
pub use proto::build_host_server::{BuildHost, BuildHostServer};

/// The metadata key builders authenticate with.
pub const AUTHORIZATION: &str = "authorization";
/// How often each end pings the other.
pub const KEEPALIVE: Duration = Duration::from_secs(5);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message either end accepts.
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// `SHA256:<hex>` of a DER certificate: what join tokens pin.
pub fn fingerprint(der: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(sha2::Sha256::digest(der)))
}

/// Where a builder's connection comes from (in every request's extensions).
#[derive(Clone, Copy, Debug)]
pub struct BuilderPeer {
    /// Its address.
    pub address: SocketAddr,
}

/// A TLS connection from a builder.
struct PeerStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    address: SocketAddr,
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = BuilderPeer;
    fn connect_info(&self) -> BuilderPeer {
        BuilderPeer {
            address: self.address,
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `service` to builders on `listener` with `tls` until `shutdown`.
pub async fn serve<S: BuildHost>(
    service: S,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<PeerStream>>(16);
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, address)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let _ = sender.send(Ok(PeerStream { inner, address })).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%address, %error, "builder door: TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%address, "builder door: TLS handshake timed out"),
                }
            });
        }
    });
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE * 2))
        .add_service(
            BuildHostServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
            shutdown,
        )
        .await;
    accept.abort();
    served
}

/// What dialing a daemon can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Nothing answered, or TLS failed (a certificate that is not the pinned
    /// one among them).
    #[error("cannot reach the Launchway daemon at {address}: {message}")]
    Unreachable {
        /// `host:port`.
        address: String,
        /// Why.
        message: String,
    },
}

/// A client of the daemon at `address` whose certificate is `pin`.
pub async fn connect(address: &str, pin: &str) -> Result<BuildHostClient<Channel>, DialError> {
    let unreachable = |message: String| DialError::Unreachable {
        address: address.to_owned(),
        message,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| unreachable(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            pin: pin.to_owned(),
            provider,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = address.to_owned();
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| unreachable(error.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE * 2)
        .keep_alive_while_idle(true)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let tcp = TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from("launchway-daemon")
                    .map_err(|error| std::io::Error::other(error.to_string()))?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|error| {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                message = inner.to_string();
                source = inner.source();
            }
            unreachable(message)
        })?;
    Ok(BuildHostClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Accepts exactly the certificate whose fingerprint is `pin`.
#[derive(Debug)]
struct Pinned {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let print = fingerprint(end_entity);
        if print.eq_ignore_ascii_case(&self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the daemon's certificate is {print}, not the {} its join token names",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
