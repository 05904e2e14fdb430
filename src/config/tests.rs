//! The `serve` configuration's tests: durations, defaults, every bad setting named in one
//! line, TLS material and tokens that load and never print, exposure warnings.

use super::*;
use clap::Parser;

#[test]
fn duration_table() {
    let ok: &[(&str, u64)] = &[
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        ("1m30s", 90_000),
        ("1h1m1s1ms", 3_661_001),
        (" 10s ", 10_000),
        ("0s", 0),
    ];
    for (text, ms) in ok {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(*ms)),
            "{text}"
        );
    }
    for bad in [
        "",
        "5",
        "5x",
        "m",
        "1.5s",
        "-1s",
        "5 m",
        "1w",
        "99999999999999999999s",
        "5mins",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
    }
    assert_eq!(format_duration(Duration::from_millis(90_500)), "1m30s500ms");
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn config(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cli.serve
        .into_config(|k| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()))
}

const SECRETS: &[(&str, &str)] = &[
    ("FINTOC_SECRET_KEY", "sk_test_x"),
    ("FINTOC_WEBHOOK_SECRET", "whsec_a, whsec_b"),
];

#[test]
fn defaults_and_secrets() {
    let c = config(&[], SECRETS).unwrap();
    assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(c.max_stream_age, Duration::from_secs(1800));
    assert_eq!(c.refresh_timeout, Duration::from_secs(1800));
    assert_eq!(c.retention, Duration::from_secs(7 * 86400));
    assert_eq!(c.database_url, "fintoc-refresh.db");
    assert_eq!(
        c.webhook_secrets,
        vec![Secret::new("whsec_a"), Secret::new("whsec_b")]
    );
    assert!(!format!("{c:?}").contains("sk_test_x"));
}

#[test]
#[allow(clippy::type_complexity)] // a table of cases reads best inline
fn bad_settings_name_the_problem() {
    let table: &[(&[&str], &[(&str, &str)], &str)] = &[
        (&[], &[], "FINTOC_SECRET_KEY"),
        (&[], &[("FINTOC_SECRET_KEY", "sk")], "FINTOC_WEBHOOK_SECRET"),
        (
            &[],
            &[
                ("FINTOC_SECRET_KEY", "sk"),
                ("FINTOC_WEBHOOK_SECRET", " , "),
            ],
            "FINTOC_WEBHOOK_SECRET",
        ),
        (
            &["--fintoc-api-url", "ftp://x"],
            SECRETS,
            "--fintoc-api-url",
        ),
        (
            &["--max-stream-age", "500ms"],
            SECRETS,
            "--max-stream-age (MAX_STREAM_AGE) must be at least 1s",
        ),
        (
            &["--fintoc-api-url", "not a url"],
            SECRETS,
            "--fintoc-api-url",
        ),
        (
            &["--heartbeat-interval", "0s"],
            SECRETS,
            "--heartbeat-interval",
        ),
        (&["--reconcile-after", "30m"], SECRETS, "--reconcile-after"),
        (
            &["--retention", "4d23h59m"],
            SECRETS,
            "--retention (RETENTION) is 4d23h59m; it must be at least 5d",
        ),
        (&["--max-body-bytes", "0"], SECRETS, "--max-body-bytes"),
        (
            &["--sqlite-wal-limit-bytes", "1048575"],
            SECRETS,
            "--sqlite-wal-limit-bytes (SQLITE_WAL_LIMIT_BYTES) is 1048575; it must be at least 1048576",
        ),
        (
            &["--max-watch-streams", "0"],
            SECRETS,
            "--max-watch-streams",
        ),
        (&["--request-timeout", "0s"], SECRETS, "--request-timeout"),
        (&["--drain-delay", "10s"], SECRETS, "--drain-delay"),
        (&["--database-url", ""], SECRETS, "--database-url"),
        // TLS files ({dir} is a folder of fixtures, see `tls_fixtures`).
        (
            &["--simulate", "--grpc-tls-cert", "{dir}/cert.pem"],
            &[],
            "--grpc-tls-key (GRPC_TLS_KEY)",
        ),
        (
            &["--simulate", "--grpc-tls-key", "{dir}/key.pem"],
            &[],
            "--grpc-tls-cert (GRPC_TLS_CERT)",
        ),
        (
            &["--simulate", "--grpc-client-ca", "{dir}/ca.pem"],
            &[],
            "--grpc-client-ca (GRPC_CLIENT_CA) needs --grpc-tls-cert",
        ),
        (
            &[
                "--simulate",
                "--grpc-tls-cert",
                "{dir}/missing.pem",
                "--grpc-tls-key",
                "{dir}/key.pem",
            ],
            &[],
            "--grpc-tls-cert (GRPC_TLS_CERT) \"{dir}/missing.pem\" cannot be read: no such file",
        ),
        (
            &[
                "--simulate",
                "--grpc-tls-cert",
                "{dir}",
                "--grpc-tls-key",
                "{dir}/key.pem",
            ],
            &[],
            "--grpc-tls-cert (GRPC_TLS_CERT)",
        ),
        (
            &[
                "--simulate",
                "--grpc-tls-cert",
                "{dir}/garbage.pem",
                "--grpc-tls-key",
                "{dir}/key.pem",
            ],
            &[],
            "--grpc-tls-cert (GRPC_TLS_CERT) \"{dir}/garbage.pem\" holds no PEM certificate",
        ),
        (
            &[
                "--simulate",
                "--grpc-tls-cert",
                "{dir}/key.pem",
                "--grpc-tls-key",
                "{dir}/key.pem",
            ],
            &[],
            "holds no PEM certificate",
        ),
        (
            &[
                "--simulate",
                "--grpc-tls-cert",
                "{dir}/cert.pem",
                "--grpc-tls-key",
                "{dir}/truncated.pem",
            ],
            &[],
            "--grpc-tls-key (GRPC_TLS_KEY) \"{dir}/truncated.pem\" is not valid PEM",
        ),
        (
            &[
                "--simulate",
                "--grpc-tls-cert",
                "{dir}/cert.pem",
                "--grpc-tls-key",
                "{dir}/cert.pem",
            ],
            &[],
            "--grpc-tls-key (GRPC_TLS_KEY) \"{dir}/cert.pem\" holds no PEM private key",
        ),
        (
            &[
                "--simulate",
                "--grpc-tls-cert",
                "{dir}/cert.pem",
                "--grpc-tls-key",
                "{dir}/other_key.pem",
            ],
            &[],
            "\"{dir}/other_key.pem\" is not the private key of the certificate",
        ),
        (
            &[
                "--simulate",
                "--grpc-tls-cert",
                "{dir}/cert.pem",
                "--grpc-tls-key",
                "{dir}/key.pem",
                "--grpc-client-ca",
                "{dir}/garbage.pem",
            ],
            &[],
            "--grpc-client-ca (GRPC_CLIENT_CA)",
        ),
        (
            &["--simulate", "--http-tls-cert", "{dir}/cert.pem"],
            &[],
            "--http-tls-key (HTTP_TLS_KEY)",
        ),
        (
            &[
                "--simulate",
                "--http-tls-cert",
                "{dir}/cert.pem",
                "--http-tls-key",
                "{dir}/binary.der",
            ],
            &[],
            "--http-tls-key (HTTP_TLS_KEY)",
        ),
        // Bearer tokens: never quoted back.
        (
            &["--simulate"],
            &[("GRPC_BEARER_TOKENS", " , ")],
            "GRPC_BEARER_TOKENS is set but holds no token",
        ),
        (
            &["--simulate"],
            &[("GRPC_BEARER_TOKENS", "0123456789abcdef0123, shortish")],
            "token #2 is shorter than 16",
        ),
        (
            &["--simulate"],
            &[("GRPC_BEARER_TOKENS", "0123456789 abcdef0123")],
            "token #1 holds a character",
        ),
    ];
    let dir = tls_fixtures();
    let path = dir.path().to_str().unwrap();
    let key_body = key_body(&dir);
    for (args, env, names) in table {
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", path)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = config(&args, env).unwrap_err();
        assert!(
            err.0.contains(&names.replace("{dir}", path)),
            "{args:?}: {err}"
        );
        assert!(!err.0.contains('\n'), "one line: {err}");
        assert!(!err.0.contains(&key_body), "no key material: {err}");
        assert!(!err.0.contains("shortish"), "no token: {err}");
    }
    assert!(
        config(&["--simulate"], &[]).is_ok(),
        "--simulate needs no secrets"
    );
    assert_eq!(
        config(&["--simulate", "--retention", "5d"], &[]).map(|c| c.retention),
        Ok(MIN_RETENTION),
        "exactly the minimum is accepted"
    );
}

/// A folder with a CA, a certificate and its key, a key of another pair, and files that
/// are not what they claim.
fn tls_fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
    let files = [
        ("cert.pem", pair.cert.pem()),
        ("key.pem", pair.signing_key.serialize_pem()),
        ("ca.pem", other.cert.pem()),
        ("other_key.pem", other.signing_key.serialize_pem()),
        ("garbage.pem", "this is not a certificate\n".into()),
        (
            "truncated.pem",
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEH\n".into(),
        ),
    ];
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    std::fs::write(dir.path().join("binary.der"), [0x30, 0x82, 0xff, 0xfe]).unwrap();
    dir
}

/// A line from the middle of the fixture key, to prove no message quotes it.
fn key_body(dir: &tempfile::TempDir) -> String {
    let key = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
    key.lines().nth(1).unwrap().to_owned()
}

#[test]
fn tls_and_tokens_load_and_never_print() {
    let dir = tls_fixtures();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
    let tokens = "token_old_0123456789, token_new_0123456789";
    let c = config(
        &[
            "--simulate",
            "--grpc-tls-cert",
            &cert,
            "--grpc-tls-key",
            &key,
            "--grpc-client-ca",
            &ca,
            "--http-tls-cert",
            &cert,
            "--http-tls-key",
            &key,
        ],
        &[("GRPC_BEARER_TOKENS", tokens)],
    )
    .unwrap();
    let grpc = c.grpc_tls.as_ref().unwrap();
    assert!(grpc.client_ca_pem.is_some());
    assert!(c.http_tls.is_some());
    assert_eq!(
        c.grpc_bearer_tokens,
        [
            Secret::new("token_old_0123456789"),
            Secret::new("token_new_0123456789")
        ]
    );
    let printed = format!("{c:?}");
    assert!(!printed.contains(&key_body(&dir)), "{printed}");
    assert!(!printed.contains("token_old"), "{printed}");
    assert!(c.grpc_callers_authenticated());
}

#[test]
#[allow(clippy::type_complexity)] // a table of cases reads best inline
fn exposure_warnings() {
    let dir = tls_fixtures();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
    let tls = ["--grpc-tls-cert", &cert, "--grpc-tls-key", &key];
    let mtls = [&tls[..], &["--grpc-client-ca", &ca]].concat();
    let token = [("GRPC_BEARER_TOKENS", "token_0123456789abcdef")];
    let open: &[(&str, &str)] = &[];
    let table: &[(&str, &[&str], &[(&str, &str)], Option<&str>)] = &[
        ("127.0.0.1:50051", &[], open, None),
        ("[::1]:50051", &[], open, None),
        (
            "0.0.0.0:50051",
            &[],
            open,
            Some("accepts calls from anyone"),
        ),
        (
            "10.1.2.3:50051",
            &tls,
            open,
            Some("accepts calls from anyone"),
        ),
        ("0.0.0.0:50051", &[], &token, Some("over plaintext")),
        ("0.0.0.0:50051", &tls, &token, None),
        ("0.0.0.0:50051", &mtls, open, None),
    ];
    for (addr, args, env, expected) in table {
        let args = [&["--simulate"], *args].concat();
        let c = config(&args, env).unwrap();
        let warning = exposure_warning(addr.parse().unwrap(), &c);
        match (expected, &warning) {
            (None, None) => {}
            (Some(needle), Some(line)) if line.contains(needle) => {
                assert!(!line.contains('\n'), "one line: {line}");
            }
            _ => panic!("{addr} {args:?}: {warning:?}, expected {expected:?}"),
        }
    }
}

/// The README's configuration table says what `serve --help` says: every flag has a row with
/// its env var and default, and every row (other than the secrets, which are no flags) is a
/// flag. A default changed in one place only fails here.
#[test]
fn the_readme_configuration_table_matches_the_flags() {
    let readme = include_str!("../../README.md");
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| `--") || l.starts_with("| (secret)"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect();
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let mut flags = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        let row = rows
            .iter()
            .find(|r| r[0] == flag)
            .unwrap_or_else(|| panic!("README's configuration table has no row for {flag}"));
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert_eq!(row[1], env, "env var of {flag}");
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match default.as_slice() {
            [] => "off".to_owned(),
            [one] if arg.get_action().takes_values() => one.clone(),
            _ => "off".to_owned(),
        };
        assert_eq!(row[2], default, "default of {flag}");
        flags.push(flag);
    }
    for row in &rows {
        assert!(
            row[0] == "(secret)" || flags.contains(&row[0]),
            "README documents {}, which `serve` does not have",
            row[0]
        );
    }
}
