//! Mail: one plain-text message per notification over SMTP with TLS, sent with `lettre` (rustls, ring,
//! Mozilla's roots from `webpki-roots`). `tls = "implicit"` speaks TLS from the first byte (port 465),
//! `"starttls"` upgrades before anything else is said and fails if the server cannot (port 587); plain
//! SMTP is not offered. With `user` and `password_file` the client logs in (AUTH PLAIN or LOGIN, only
//! ever inside TLS). `ca_file` adds a trusted PEM certificate (a mail server with a self-signed one). The
//! password is read from its file for each message and never logged.

use backup::config::{SmtpConfig, SmtpTls};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncTransport, Tokio1Executor};

use crate::{Message, Options};

/// The port in use: the configured one, else 465 (implicit TLS) or 587 (STARTTLS).
pub fn port(c: &SmtpConfig) -> u16 {
    c.port.unwrap_or(match c.tls {
        SmtpTls::Implicit => 465,
        SmtpTls::Starttls => 587,
    })
}

/// `host:port`, for the log.
pub fn describe(c: &SmtpConfig) -> String {
    format!("{}:{}", c.host, port(c))
}

/// The mail for `message` (subject = title, body = text and the facts as `key: value` lines).
pub fn build(c: &SmtpConfig, message: &Message) -> Result<lettre::Message, String> {
    let from: Mailbox = c
        .from
        .parse()
        .map_err(|e| format!("from {:?}: {e}", c.from))?;
    let mut b = lettre::Message::builder()
        .from(from)
        .subject(message.title.clone())
        .header(ContentType::TEXT_PLAIN);
    for to in &c.to {
        let to: Mailbox = to.parse().map_err(|e| format!("to {to:?}: {e}"))?;
        b = b.to(to);
    }
    let mut body = message.text.clone();
    body.push_str("\n\n-- \nSent by offsite serve ([notify] in its config).\n");
    b.body(body).map_err(|e| e.to_string())
}

/// Sends `message` (the caller applies the overall timeout; each SMTP step has it too).
pub async fn send(c: &SmtpConfig, message: &Message, opts: &Options) -> Result<(), String> {
    let mail = build(c, message)?;
    let mut tls = TlsParameters::builder(c.host.clone());
    if let Some(ca) = &c.ca_file {
        let pem = tokio::fs::read(ca)
            .await
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(format!(
                "ca_file {}: no PEM certificate in it",
                ca.display()
            ));
        }
        let cert =
            Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls.build_rustls().map_err(|e| format!("TLS: {e}"))?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.clone())
        .port(port(c))
        .timeout(Some(opts.timeout))
        .hello_name(ClientId::Domain(crate::box_name()))
        .tls(match c.tls {
            SmtpTls::Implicit => Tls::Wrapper(tls),
            SmtpTls::Starttls => Tls::Required(tls),
        });
    if let (Some(user), Some(file)) = (&c.user, &c.password_file) {
        let password = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| format!("password_file {}: {e}", file.display()))?;
        // One line; a trailing newline from an editor is not part of it.
        let password = password.trim_end_matches(['\r', '\n']).to_owned();
        builder = builder
            .credentials(Credentials::new(user.clone(), password))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    builder
        .build()
        .send(mail)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SmtpConfig {
        SmtpConfig {
            host: "mail.example".into(),
            port: None,
            tls: SmtpTls::Starttls,
            user: None,
            password_file: None,
            from: "NAS <nas@example.org>".into(),
            to: vec!["me@example.org".into(), "you@example.org".into()],
            ca_file: None,
        }
    }

    #[test]
    fn ports_and_the_mail() {
        let mut c = config();
        assert_eq!(port(&c), 587);
        c.tls = SmtpTls::Implicit;
        assert_eq!(describe(&c), "mail.example:465");
        c.port = Some(2465);
        assert_eq!(port(&c), 2465);
        let m = Message::for_run("nas1", "now", "failed", Some("no route"), None);
        let mail = build(&c, &m).expect("mail");
        let text = String::from_utf8_lossy(&mail.formatted()).into_owned();
        assert!(
            text.contains("Subject: offsite on nas1: backup FAILED"),
            "{text}"
        );
        assert!(
            text.contains("To: me@example.org, you@example.org"),
            "{text}"
        );
        c.from = "not an address".into();
        assert!(build(&c, &m).is_err());
    }
}
