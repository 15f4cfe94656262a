//! What the SDK's HTTP calls share (`POST /register`, `POST /status`): the client on rustls
//! with the *ring* provider, one JSON post, and reading a refusal's envelope.

use std::sync::Arc;
use std::time::Duration;

use super::error::Cause;
use crate::protocol::codes::{ApiCode, ErrorBody, ErrorEnvelope};

/// An HTTP client on rustls with the ring provider, chosen here rather than installed
/// process-wide, so linking unibus never changes another library's TLS. It trusts only
/// `trusted_roots` (DER), or the platform's trust store when there are none.
pub(super) fn client(
    trusted_roots: &[Vec<u8>],
    timeout: Duration,
) -> Result<reqwest::Client, Cause> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let config = if trusted_roots.is_empty() {
        let verifier = rustls_platform_verifier::Verifier::new(provider)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for der in trusted_roots {
            roots.add(rustls::pki_types::CertificateDer::from(der.clone()))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(timeout)
        .build()?)
}

/// Posts `json` to `url` and reads the whole answer: its status and body.
pub(super) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    json: Vec<u8>,
) -> Result<(reqwest::StatusCode, Vec<u8>), reqwest::Error> {
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json)
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.bytes().await?.to_vec()))
}

/// The refusal a failed answer's body carries (protocol §10), if it carries one.
pub(super) fn refusal(body: &[u8]) -> Option<ErrorBody<ApiCode>> {
    serde_json::from_slice::<ErrorEnvelope<ApiCode>>(body)
        .ok()
        .map(|envelope| envelope.error)
}
