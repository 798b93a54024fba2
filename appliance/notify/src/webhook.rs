//! The webhook: one JSON POST per message, that ntfy, Gotify and Slack-style incoming webhooks
//! (Slack, Mattermost, Rocket.Chat) all take as it is:
//!
//! ```json
//! {
//!   "title": "offsite on nas1: backup FAILED",
//!   "message": "The nightly run ended: failed.\n- photos: failed: …",
//!   "text": "*offsite on nas1: backup FAILED*\nThe nightly run ended: failed.\n…",
//!   "priority": 5,
//!   "tags": ["warning"],
//!   "topic": "backups",
//!   "offsite": { "box": "nas1", "slot": "*", "status": "failed", "shares": [ … ], "skipped": 0 }
//! }
//! ```
//!
//! * Gotify (`https://gotify.example/message?token=APPTOKEN`) reads `title`, `message`, `priority`.
//! * Slack and its kind read `text` (with `*bold*` markup) and ignore the rest.
//! * ntfy takes a JSON body only at its root URL, with the topic in the body: write the topic as the URL's
//!   fragment, `https://ntfy.example/#backups` — the fragment is never sent, it becomes `"topic"`, and the
//!   POST goes to the root. ntfy reads `topic`, `title`, `message`, `priority` (1–5), `tags`.
//! * `priority` is 5 for a failed run, 4 for a partial one, 3 otherwise: ntfy's urgent/high/default, and on
//!   Gotify's 0–10 scale a notification with sound for the first two, a quiet one for the rest.
//! * `offsite` holds the same facts for machines (see [`crate::Message::fields`]).
//!
//! The request goes over hyper's HTTP/1.1 client, on tokio-rustls for `https://` (verified against
//! `webpki-roots`, Mozilla's roots compiled in, so a box whose firmware has an old or no CA bundle still
//! verifies; ring as the crypto, like the rest of offsite). `http://` is allowed for a LAN service. A
//! token can sit in the URL's query (Gotify's `?token=`, ntfy's `?auth=`); the URL is therefore never
//! logged, only its host ([`describe`]). Any 2xx answer is success; redirects are not followed.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Message, Options};

/// The JSON body for `message`, with `topic` when the URL has a fragment.
pub fn payload(message: &Message, topic: Option<&str>) -> serde_json::Value {
    let (priority, tag) = match message.status.as_str() {
        "failed" => (5, "rotating_light"),
        "partial" => (4, "warning"),
        "test" => (3, "bell"),
        _ => (3, "white_check_mark"),
    };
    let mut v = serde_json::json!({
        "title": message.title,
        "message": message.text,
        "text": format!("*{}*\n{}", message.title, message.text),
        "priority": priority,
        "tags": [tag, "offsite"],
        "offsite": message.fields,
    });
    if let (Some(t), Some(o)) = (topic, v.as_object_mut()) {
        o.insert("topic".into(), t.into());
    }
    v
}

/// A webhook URL as it may appear in a log: scheme and host (and port), nothing else.
pub fn describe(url: &str) -> String {
    let (url, _) = url.split_once('#').unwrap_or((url, ""));
    match url.parse::<Uri>() {
        Ok(u) => match (u.scheme_str(), u.host()) {
            (Some(s), Some(h)) => match u.port_u16() {
                Some(p) => format!("{s}://{h}:{p}"),
                None => format!("{s}://{h}"),
            },
            _ => "(an invalid URL)".into(),
        },
        Err(_) => "(an invalid URL)".into(),
    }
}

/// Posts `message` to `url` (the caller applies the timeout).
pub async fn post(url: &str, message: &Message, opts: &Options) -> Result<(), String> {
    let (url, topic) = match url.split_once('#') {
        Some((u, t)) if !t.is_empty() => (u, Some(t)),
        Some((u, _)) => (u, None),
        None => (url, None),
    };
    let uri: Uri = url.parse().map_err(|_| "not a valid URL".to_string())?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URL must start with https:// or http://".into()),
    };
    let authority = uri.authority().ok_or("the URL has no host")?;
    if authority.as_str().contains('@') {
        // http::Uri would keep it in the Host header; a token belongs in the query.
        return Err("user:password@ in the URL is not supported (put a token in the query)".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let body = serde_json::to_vec(&payload(message, topic)).map_err(|e| e.to_string())?;
    let request = Request::post(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("offsite/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;

    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let answer = if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| "not a valid TLS server name".to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(opts)?))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(TokioIo::new(tls), request).await?
    } else {
        exchange(TokioIo::new(tcp), request).await?
    };
    let (status, text) = answer;
    if status.is_success() {
        Ok(())
    } else {
        let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        Err(format!("answered {status}: {}", text.trim()))
    }
}

/// rustls with Mozilla's roots (and the test's extra ones).
fn client_config(opts: &Options) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in &opts.extra_roots {
        roots.add(c.clone()).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Answers are read up to this size (an error page, at most).
const MAX_ANSWER: usize = 64 * 1024;

async fn exchange<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, String), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // The connection is driven by its own task, which ends with it (or with the caller's timeout
    // dropping the sender).
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let text = match Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        Ok((status, text))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_sees_only_the_host() {
        assert_eq!(
            describe("https://gotify.example:8443/message?token=SECRET"),
            "https://gotify.example:8443"
        );
        assert_eq!(describe("http://ntfy.lan/#backups"), "http://ntfy.lan");
        assert_eq!(describe("nonsense"), "(an invalid URL)");
    }

    #[test]
    fn the_payload_suits_ntfy_gotify_and_slack() {
        let m = Message::for_run("nas1", "*", "failed", Some("boom"), None);
        let p = payload(&m, Some("backups"));
        assert_eq!(p["topic"], "backups");
        assert_eq!(p["title"], m.title);
        assert_eq!(p["message"], m.text);
        assert_eq!(p["priority"], 5);
        assert!(
            p["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("*offsite on nas1"))
        );
        assert_eq!(p["offsite"]["status"], "failed");
        assert!(payload(&m, None).get("topic").is_none());
    }
}
