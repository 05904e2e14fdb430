//! Who may call, end to end: TLS and mutual TLS on the gRPC port, bearer tokens in front of
//! RefreshService (health and reflection open), the intake over HTTPS, and the human client
//! against a secured server. Certificates are made per test by [`Pki`], never checked in.

use std::path::PathBuf;

use crate::common::*;
use fintoc_refresh::cli::connect::{self, ConnectArgs, Credentials};
use fintoc_refresh::pb;
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig};
use fintoc_refresh::tls::{self, GrpcTls, Setting, TlsIdentity};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CERT: Setting = Setting {
    flag: "--test-cert",
    env: "TEST_CERT",
};
const KEY: Setting = Setting {
    flag: "--test-key",
    env: "TEST_KEY",
};
const TOKEN_OLD: &str = "tok_old_7f3a9c2e41d86b05";
const TOKEN_NEW: &str = "tok_new_0b5e8d1c93a7f264";

/// A throwaway PKI in a temp folder: a CA, a server certificate for 127.0.0.1 and localhost,
/// a client certificate it signed, and a second CA with a client certificate of its own.
///
/// Files: `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`, `other-ca.pem`,
/// `other-client.pem`/`other-client.key`.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
        let (ca_pem, ca) = authority("fintoc-refresh test CA");
        write("ca.pem", &ca_pem);
        let server = ["127.0.0.1", "localhost"];
        let (cert, key) = leaf(&ca, &server, ExtendedKeyUsagePurpose::ServerAuth);
        write("server.pem", &cert);
        write("server.key", &key);
        let client = ["caller.internal"];
        let (cert, key) = leaf(&ca, &client, ExtendedKeyUsagePurpose::ClientAuth);
        write("client.pem", &cert);
        write("client.key", &key);
        let (other_pem, other) = authority("some other CA");
        write("other-ca.pem", &other_pem);
        let (cert, key) = leaf(&other, &client, ExtendedKeyUsagePurpose::ClientAuth);
        write("other-client.pem", &cert);
        write("other-client.key", &key);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// The server identity, loaded the way `serve` loads its flags.
    pub fn server_identity(&self) -> TlsIdentity {
        let (cert, key) = (self.path("server.pem"), self.path("server.key"));
        tls::load_identity((CERT, &cert), (KEY, &key)).unwrap()
    }

    /// gRPC TLS; `mutual` also requires client certificates signed by `ca.pem`.
    pub fn grpc_tls(&self, mutual: bool) -> GrpcTls {
        GrpcTls {
            identity: self.server_identity(),
            client_ca_pem: mutual.then(|| tls::load_ca(CERT, &self.path("ca.pem")).unwrap()),
        }
    }

    /// A client TLS config trusting `ca` and presenting `client` (`"client"` or
    /// `"other-client"`) if given.
    pub fn client_tls(&self, ca: &str, client: Option<&str>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.read(ca)));
        match client {
            Some(name) => config.identity(Identity::from_pem(
                self.read(&format!("{name}.pem")),
                self.read(&format!("{name}.key")),
            )),
            None => config,
        }
    }
}

/// A self-signed CA named `name`: its PEM, and the issuer that signs with it.
pub fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate for `names` (the first is also its common name) signed by `issuer`, for
/// `usage`: its PEM and its private key's PEM (PKCS#8).
pub fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Connects and asks grpc.health.v1 — Ok, or why not (the refusal of a TLS 1.3 server can
/// come at the handshake or with the first call).
async fn health(endpoint: Endpoint) -> Result<(), String> {
    let attempt = async {
        let channel = endpoint.connect().await.map_err(|e| connect::causes(&e))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(drop)
            .map_err(|s| connect::causes(&s))
    };
    tokio::time::timeout(PATIENCE, attempt)
        .await
        .expect("a refusal is prompt, not a hang")
}

/// Whether `err` is the server's refusal: its TLS alert, or — because with TLS 1.3 a client
/// finishes its side of the handshake before the server has checked its certificate — the
/// connection closing under the first call before the alert was read.
fn refused(err: &str, alert: &str) -> bool {
    err.contains(alert) || err.contains("connection closed") || err.contains("broken pipe")
}

fn https(server: &TestServer, tls: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
}

fn plaintext(server: &TestServer) -> Endpoint {
    Endpoint::from_shared(format!("http://{}", server.grpc)).unwrap()
}

async fn get_unknown(client: &mut connect::Client) -> tonic::Status {
    client
        .get_refresh(pb::GetRefreshRequest {
            refresh_intent_id: "ri_nope".into(),
        })
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_tls_server_refuses_plaintext_and_untrusting_clients_and_serves_the_rest() {
    let pki = Pki::new();
    let server = TestServer::with(Options {
        grpc_tls: Some(pki.grpc_tls(false)),
        ..Options::default()
    })
    .await;
    health(plaintext(&server)).await.unwrap_err();
    let err = health(https(&server, pki.client_tls("other-ca.pem", None)))
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    health(https(&server, pki.client_tls("ca.pem", None)))
        .await
        .unwrap();
    // RefreshService over TLS too, through the human client's own connect.
    let mut args = ConnectArgs::plain(format!("https://{}", server.grpc));
    args.ca_cert = Some(pki.path("ca.pem"));
    let mut client = connect::connect(&args, Credentials::default())
        .await
        .unwrap()
        .stub;
    assert_eq!(get_unknown(&mut client).await.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_admits_only_client_certificates_from_its_ca() {
    let pki = Pki::new();
    let server = TestServer::with(Options {
        grpc_tls: Some(pki.grpc_tls(true)),
        ..Options::default()
    })
    .await;
    let err = health(https(&server, pki.client_tls("ca.pem", None)))
        .await
        .unwrap_err();
    assert!(refused(&err, "CertificateRequired"), "{err}");
    let other = pki.client_tls("ca.pem", Some("other-client"));
    let err = health(https(&server, other)).await.unwrap_err();
    assert!(refused(&err, "UnknownCA"), "{err}");
    let right = pki.client_tls("ca.pem", Some("client"));
    health(https(&server, right)).await.unwrap();
    let mut args = ConnectArgs::plain(format!("https://{}", server.grpc));
    args.ca_cert = Some(pki.path("ca.pem"));
    args.client_cert = Some(pki.path("client.pem"));
    args.client_key = Some(pki.path("client.key"));
    let mut client = connect::connect(&args, Credentials::default())
        .await
        .unwrap()
        .stub;
    assert_eq!(get_unknown(&mut client).await.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bearer_tokens_guard_refresh_service_and_rotate() {
    let server = TestServer::with(Options {
        bearer_tokens: vec![TOKEN_OLD.into(), TOKEN_NEW.into()],
        ..Options::default()
    })
    .await;
    let args = ConnectArgs::plain(server.grpc.to_string());
    let client = |token: Option<&'static str>| {
        let args = args.clone();
        async move {
            let credentials = Credentials::bearer(token).unwrap();
            connect::connect(&args, credentials).await.unwrap().stub
        }
    };
    let wrong = "tok_wrong_5d0c7a3b9e12f468";
    for (token, needle) in [
        (None, "requires a bearer token"),
        (Some(wrong), "not accepted"),
    ] {
        let status = get_unknown(&mut client(token).await).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        let message = status.message();
        assert!(message.contains(needle), "{message}");
        for secret in [wrong, TOKEN_OLD, TOKEN_NEW] {
            assert!(!message.contains(secret), "{message}");
        }
    }
    // Streams are guarded like unary calls.
    let status = client(None)
        .await
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(link_target("link_1")),
            after_sequence: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Either token of a rotation gets through.
    for token in [TOKEN_OLD, TOKEN_NEW] {
        let status = get_unknown(&mut client(Some(token)).await).await;
        assert_eq!(status.code(), Code::NotFound, "{token}: {status:?}");
    }
    // Load balancers and grpcurl need no token.
    health(plaintext(&server)).await.unwrap();
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"fintoc_refresh_unauthenticated_total{reason="missing"} 2"#)
            && metrics.contains(r#"fintoc_refresh_unauthenticated_total{reason="wrong_token"} 1"#),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_stays_open_behind_tokens() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
    };
    let server = TestServer::with(Options {
        bearer_tokens: vec![TOKEN_NEW.into()],
        ..Options::default()
    })
    .await;
    let channel = plaintext(&server).connect().await.unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let listed = format!("{:?}", responses.next().await.unwrap().unwrap());
    assert!(
        listed.contains("fintoc.refresh.v1.RefreshService"),
        "{listed}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_intake_serves_https_and_plain_http_gets_nothing() {
    let pki = Pki::new();
    let server = TestServer::with(Options {
        http_tls: Some(pki.server_identity()),
        http_trust: Some(pki.read("ca.pem")),
        ..Options::default()
    })
    .await;
    assert!(server.http_base.starts_with("https://"));
    let body = event("evt_tls", "acc_1", "succeeded", server.clock.now_ms());
    let (status, _) = server.post_event(&body).await;
    assert_eq!(status, 200);
    assert_eq!(server.get("/healthz").await, (200, "ok\n".into()));
    let plain = reqwest::Client::new()
        .post(format!("http://{}/webhooks/fintoc", server.http))
        .body(event(
            "evt_plain",
            "acc_1",
            "succeeded",
            server.clock.now_ms(),
        ))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    assert_eq!(
        server.counts().await.webhook_events,
        1,
        "only the HTTPS one is stored"
    );
    // Graceful shutdown with a pooled HTTPS connection still open.
    server.stop().await.unwrap();
}

#[tokio::test]
async fn simulated_webhooks_reach_an_https_intake() {
    let pki = Pki::new();
    let mut sim = SimConfig::new(API_KEY);
    sim.delivery_delay = std::time::Duration::ZERO;
    sim.retry_base = std::time::Duration::from_millis(20);
    let server = TestServer::with(Options {
        simulator: Some(sim),
        http_tls: Some(pki.server_identity()),
        ..Options::default()
    })
    .await;
    let link = server
        .sim
        .as_ref()
        .unwrap()
        .add_link(LinkSpec::new(vec![Outcome::Succeed { new_movements: 1 }]));
    let answer = server
        .client()
        .await
        .request_refresh(pb::RequestRefreshRequest {
            link_token: link.token.clone(),
            refresh_type: 0,
            idempotency_key: String::new(),
            keep_link_token: false,
        })
        .await
        .unwrap()
        .into_inner();
    let intent = answer.refresh_intent.unwrap();
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    watch.next_event().await;
    assert!(matches!(
        watch.next_event().await,
        Seen::Completed {
            status: pb::RefreshStatus::Succeeded,
            ..
        }
    ));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_human_client_follows_an_intent_on_a_secured_server() {
    let pki = Pki::new();
    let server = TestServer::with(Options {
        grpc_tls: Some(pki.grpc_tls(true)),
        bearer_tokens: vec![TOKEN_NEW.into()],
        ..Options::default()
    })
    .await;
    server
        .create_intent("ri_cli", "link_cli", &["acc_cli"])
        .await;
    let body = event("evt_cli", "acc_cli", "succeeded", server.clock.now_ms());
    assert_eq!(server.post_event(&body).await.0, 200);
    let run = |token: Option<&'static str>, client_cert: bool| {
        let mut command = crate::binary::command();
        command
            .args(["watch", "--refresh-intent-id", "ri_cli", "--server"])
            .arg(format!("https://{}", server.grpc))
            .arg("--ca-cert")
            .arg(pki.path("ca.pem"))
            .env_remove(connect::TOKEN_ENV);
        if client_cert {
            command
                .arg("--client-cert")
                .arg(pki.path("client.pem"))
                .arg("--client-key")
                .arg(pki.path("client.key"));
        }
        if let Some(token) = token {
            command.env(connect::TOKEN_ENV, token);
        }
        // Off the runtime's thread: the server under test runs on it.
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let out = run(Some(TOKEN_NEW), true).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {:?}", out.stderr);
    assert!(stdout.contains("refresh ri_cli SUCCEEDED"), "{stdout}");
    for (token, client_cert, needle) in [
        (None, true, "UNAUTHENTICATED"),
        (Some(TOKEN_NEW), false, "CertificateRequired"),
    ] {
        let out = run(token, client_cert).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        // A refused certificate can first show as a connection the server dropped (it
        // closes it after the handshake): the watcher notes those and retries; the last
        // line is the refusal, which it does not retry.
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && refused(last, needle),
            "{stderr}"
        );
        assert!(!stderr.contains(TOKEN_NEW), "{stderr}");
    }
    server.stop().await.unwrap();
}
