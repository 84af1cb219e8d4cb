//! TLS to a Polykey agent, pinned to the agent's certificate file.
//!
//! The agent's self-signed certificate carries two critical extensions of Polykey's own
//! (1.3.6.1.4.1.57167.2.2.1 and .2). webpki, and so rustls's own verifiers, refuse any
//! certificate with a critical extension they do not know, both as a trust anchor and when
//! checking the handshake signature with it. Polykey's own client turns verification off; here
//! the certificate is pinned instead: the server must present exactly the bytes of the file the
//! agent wrote, and must prove it holds that certificate's key by the TLS 1.3 handshake
//! signature, checked against the public key taken from the pinned file.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower_agent_session::BoxError;
use x509_cert::der::{Decode as _, Encode as _};

/// How long connecting (TCP and the TLS handshake) may take. The agent is on loopback and
/// answers at once; a generous bound only keeps a wedged agent from hanging a test or the CLI.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to the agent's client service on `address`, over TLS pinned to `cert_pem`.
///
/// `address` must be a loopback address: the agent's client service listens on 127.0.0.1, and
/// nothing here should ever be pointed elsewhere.
pub async fn connect(address: SocketAddr, cert_pem: &Path) -> Result<Channel, BoxError> {
    let connector = PinnedConnector::new(cert_pem)?;
    let channel = endpoint(address)?.connect_with_connector(connector).await?;
    Ok(channel)
}

/// Like [`connect`], but connects on the first call: for a CLI that may fail before any call.
pub fn connect_lazy(address: SocketAddr, cert_pem: &Path) -> Result<Channel, BoxError> {
    let connector = PinnedConnector::new(cert_pem)?;
    Ok(endpoint(address)?.connect_with_connector_lazy(connector))
}

fn endpoint(address: SocketAddr) -> Result<Endpoint, BoxError> {
    if !address.ip().is_loopback() {
        return Err(format!("refusing {address}: the agent is only reached on loopback").into());
    }
    Ok(Endpoint::from_shared(format!("https://{address}"))?.connect_timeout(CONNECT_TIMEOUT))
}

/// A rustls client configuration that trusts only the certificate in `cert_pem`, speaks only
/// TLS 1.3 and offers ALPN `h2` (grpc-js requires it).
pub fn pinned_config(cert_pem: &Path) -> Result<ClientConfig, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCertVerifier::from_pem_file(cert_pem, &provider)?;
    // TLS 1.2's signature covers less of the handshake and its check would need the same
    // hand-made path again; the agent speaks 1.3, so 1.2 is simply not offered.
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts exactly one certificate, the pinned one, and checks handshake signatures against its
/// public key.
pub struct PinnedCertVerifier {
    pinned: CertificateDer<'static>,
    public_key: SubjectPublicKeyInfoDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertVerifier {
    /// Pins the first certificate of the PEM file `path`.
    pub fn from_pem_file(path: &Path, provider: &CryptoProvider) -> Result<Self, BoxError> {
        let pinned = CertificateDer::from_pem_file(path)
            .map_err(|e| format!("reading the agent's certificate {}: {e}", path.display()))?;
        // webpki will not parse this certificate (its critical extensions), so the key comes
        // from a plain X.509 decoder that does not judge extensions.
        let certificate = x509_cert::Certificate::from_der(&pinned)
            .map_err(|e| format!("decoding the agent's certificate {}: {e}", path.display()))?;
        let public_key = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()?;
        Ok(Self {
            pinned,
            public_key: SubjectPublicKeyInfoDer::from(public_key),
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl fmt::Debug for PinnedCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedCertVerifier")
            .field("pinned_len", &self.pinned.len())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pin stands in for the name and the validity dates: the agent writes this file
        // when it starts, and a certificate it renews is a new file to pin.
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered (see `pinned_config`); a 1.2 handshake here is a bug.
        Err(rustls::Error::General("TLS 1.2 is refused".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The pinned key, not the presented certificate's: `verify_server_cert` has already
        // required the two to be the same bytes.
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &self.public_key,
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A tonic connector: TCP to the endpoint's loopback address, then TLS pinned to one
/// certificate.
#[derive(Clone)]
pub struct PinnedConnector {
    tls: TlsConnector,
}

impl PinnedConnector {
    /// A connector trusting only the certificate in `cert_pem`.
    pub fn new(cert_pem: &Path) -> Result<Self, BoxError> {
        Ok(Self {
            tls: TlsConnector::from(Arc::new(pinned_config(cert_pem)?)),
        })
    }
}

impl tower::Service<Uri> for PinnedConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let address = loopback_address(&uri)?;
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(address.ip().into());
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The socket address of `uri`, which must be an IP literal on loopback (no name lookups: the
/// agent is always `127.0.0.1` or `::1`).
fn loopback_address(uri: &Uri) -> Result<SocketAddr, BoxError> {
    let host = uri.host().ok_or("the agent's address has no host")?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("the agent's address {host} is not an IP address"))?;
    if !ip.is_loopback() {
        return Err(format!("refusing {ip}: the agent is only reached on loopback").into());
    }
    let port = uri.port_u16().ok_or("the agent's address has no port")?;
    Ok(SocketAddr::new(ip, port))
}
