//! What the SDK's HTTP calls share (`POST /register`, `POST /status`): the client on rustls
//! with the *ring* provider, one JSON post, and reading a refusal's envelope.

use std::sync::Arc;
use std::time::Duration;

use super::error::Cause;
use crate::protocol::codes::{ApiCode, ErrorBody, ErrorEnvelope};

/// An HTTP client for `url` on rustls with the ring provider, chosen here rather than installed
/// process-wide, so linking unibus never changes another library's TLS. For an `https` URL it
/// trusts only `trusted_roots` (DER), or the platform's trust store when there are none.
///
/// For a plain `http` URL (a loopback server: [`InviteLink`](crate::InviteLink) refuses any
/// other) no trust store is read, so a device without CA certificates can still register with a
/// local server. That client trusts no certificate at all: a redirect to `https` fails closed.
pub(super) fn client(
    url: &str,
    trusted_roots: &[Vec<u8>],
    timeout: Duration,
) -> Result<reqwest::Client, Cause> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let plain_http = url
        .get(.."http://".len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    let config = if plain_http {
        builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    } else if trusted_roots.is_empty() {
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::process::Command;
    use std::time::Duration;

    use crate::client::{register, RegisterError, RegisterOptions};
    use crate::{Identity, InviteLink};

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    /// Answers one HTTP request on `listener` with 404 and the refusal `invite_unknown`, and
    /// returns the request line it read.
    fn refuse_one_request(listener: &TcpListener) -> String {
        let (stream, _) = listener.accept().expect("a client connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout can be set");
        let mut reader = BufReader::new(&stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).expect("a request line");
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).expect("a header line");
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("a numeric content-length");
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("the whole body");
        let refusal = r#"{"error":{"code":"invite_unknown","message":"no such invite"}}"#;
        write!(
            &stream,
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{refusal}",
            refusal.len()
        )
        .expect("the answer is written");
        request_line
    }

    /// Runs only in the process that
    /// [`plain_http_needs_no_ca_store_and_https_without_one_is_a_typed_error`] starts, whose
    /// only CA store is an empty file.
    #[test]
    #[ignore = "started by plain_http_needs_no_ca_store_and_https_without_one_is_a_typed_error"]
    fn in_a_process_without_a_ca_store() {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let me = Identity::generate().expect("an identity");
        let options = RegisterOptions {
            attempts: 1,
            ..RegisterOptions::default()
        };

        let https = InviteLink::parse(&format!("https://127.0.0.1:1/invite#{TOKEN}"))
            .expect("a loopback https link");
        let refused = runtime.block_on(register(&https, &me, &options));
        let Err(RegisterError::Tls(cause)) = refused else {
            panic!("https without a CA store: expected RegisterError::Tls, got {refused:?}");
        };
        assert!(
            cause.to_string().contains("No CA certificates"),
            "the cause names the missing CA store: {cause}"
        );

        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let server = std::thread::spawn(move || refuse_one_request(&listener));
        let http = InviteLink::parse(&format!("http://{address}/invite#{TOKEN}"))
            .expect("a loopback http link");
        let answered = runtime.block_on(register(&http, &me, &options));
        assert!(
            matches!(answered, Err(RegisterError::InviteUnknown)),
            "plain http reaches the server and reads its refusal: {answered:?}"
        );
        let request_line = server.join().expect("the server thread");
        assert!(
            request_line.starts_with("POST /register "),
            "{request_line}"
        );
    }

    #[test]
    fn plain_http_needs_no_ca_store_and_https_without_one_is_a_typed_error() {
        // The platform verifier reads the CA store named by SSL_CERT_FILE when it is set: an
        // empty file is a system without CA certificates. A child process, so no other test
        // sees the variable.
        let output = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "--ignored", "--test-threads=1"])
            .arg("client::http::tests::in_a_process_without_a_ca_store")
            .env("SSL_CERT_FILE", "/dev/null")
            .env_remove("SSL_CERT_DIR")
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
