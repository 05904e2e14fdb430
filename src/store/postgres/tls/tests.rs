//! Tests of the libpq-like TLS settings: which combinations are refused, and what each verifies.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

fn params(pairs: &[(&str, &str)]) -> SslParams {
    let mut params = SslParams::default();
    for (k, v) in pairs {
        params.set(k, (*v).to_owned());
    }
    params
}

fn plan(pairs: &[(&str, &str)]) -> Result<Plan, String> {
    Plan::new(params(pairs))
}

#[test]
fn sslmode_is_read_as_libpq_reads_it() {
    use Check::*;
    let file = Roots::File("ca.pem".into());
    type Case<'a> = (&'a [(&'a str, &'a str)], SslMode, Check, Roots);
    let cases: &[Case] = &[
        (&[], SslMode::Prefer, Nothing, Roots::System),
        (
            &[("sslmode", "disable")],
            SslMode::Disable,
            Nothing,
            Roots::System,
        ),
        (
            &[("sslmode", "require")],
            SslMode::Require,
            Nothing,
            Roots::System,
        ),
        // libpq: a root CA file makes `require` (and `prefer`) check the chain.
        (
            &[("sslmode", "require"), ("sslrootcert", "ca.pem")],
            SslMode::Require,
            Chain,
            file.clone(),
        ),
        (
            &[("sslrootcert", "ca.pem")],
            SslMode::Prefer,
            Chain,
            file.clone(),
        ),
        (
            &[("sslmode", "disable"), ("sslrootcert", "ca.pem")],
            SslMode::Disable,
            Nothing,
            file.clone(),
        ),
        (
            &[("sslmode", "verify-ca"), ("sslrootcert", "ca.pem")],
            SslMode::Require,
            Chain,
            file.clone(),
        ),
        (
            &[("sslmode", "verify-full"), ("sslrootcert", "ca.pem")],
            SslMode::Require,
            ChainAndName,
            file.clone(),
        ),
        (
            &[("sslmode", "verify-full")],
            SslMode::Require,
            ChainAndName,
            Roots::System,
        ),
        // sslrootcert=system makes verify-full the default.
        (
            &[("sslrootcert", "system")],
            SslMode::Require,
            ChainAndName,
            Roots::System,
        ),
        (
            &[("sslrootcert", "system"), ("sslmode", "verify-full")],
            SslMode::Require,
            ChainAndName,
            Roots::System,
        ),
    ];
    for (pairs, mode, check, roots) in cases {
        let plan = plan(pairs).unwrap_or_else(|e| panic!("{pairs:?}: {e}"));
        assert_eq!(
            (plan.mode, plan.check, &plan.roots),
            (*mode, *check, roots),
            "{pairs:?}"
        );
    }
}

#[test]
fn weak_or_half_settings_are_refused_saying_why() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("sslrootcert", "system"), ("sslmode", "require")],
            "weak sslmode \"require\" may not be used with sslrootcert=system (use \
             \"verify-full\")",
        ),
        (
            &[("sslrootcert", "system"), ("sslmode", "prefer")],
            "weak sslmode \"prefer\" may not be used with sslrootcert=system",
        ),
        (
            &[("sslrootcert", "system"), ("sslmode", "disable")],
            "weak sslmode \"disable\" may not be used with sslrootcert=system",
        ),
        (
            &[("sslrootcert", "system"), ("sslmode", "verify-ca")],
            "weak sslmode \"verify-ca\" may not be used with sslrootcert=system",
        ),
        (
            &[("sslmode", "verify-ca")],
            "sslmode \"verify-ca\" needs sslrootcert=<CA file>",
        ),
        (&[("sslmode", "allow")], "sslmode \"allow\" is not one of"),
        (
            &[("sslmode", "Require")],
            "sslmode \"Require\" is not one of",
        ),
        (
            &[("sslcert", "client.pem")],
            "sslcert is set but sslkey is not",
        ),
        (
            &[("sslkey", "client.key")],
            "sslkey is set but sslcert is not",
        ),
    ];
    for (pairs, needle) in cases {
        let err = plan(pairs).expect_err(needle);
        assert!(err.contains(needle), "{pairs:?}: {err}");
    }
    for half in ["sslcert", "sslkey"] {
        let err = plan(&[(half, "x.pem")]).unwrap_err();
        assert!(err.contains("give both sslcert and sslkey"), "{err}");
    }
}

fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, name: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// verify-ca accepts a certificate of the CA for another name, and still refuses one of
/// another CA, whatever its name: the name is the only thing it lets pass.
#[test]
fn verify_ca_checks_the_chain_and_not_the_name() {
    let (ca_pem, ca) = authority("the CA");
    let (_, other) = authority("another CA");
    let mut roots = RootCertStore::empty();
    roots.add(der(&ca_pem)).unwrap();
    let verifier = ChainOnly::new(Arc::new(roots)).unwrap();
    let ip = ServerName::try_from("127.0.0.1").unwrap();
    let check = |cert: &str, name: &ServerName<'_>| {
        verifier.verify_server_cert(&der(cert), &[], name, &[], UnixTime::now())
    };
    let (named_elsewhere, _) = leaf(&ca, "db.example");
    check(&named_elsewhere, &ip).expect("the CA's certificate for another name");
    let (right_name, _) = leaf(&ca, "127.0.0.1");
    check(&right_name, &ip).expect("the CA's certificate for this name");
    for name in ["db.example", "127.0.0.1"] {
        let (foreign, _) = leaf(&other, name);
        let err = check(&foreign, &ip).expect_err(name);
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn files_are_named_in_errors_and_their_content_never() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let (ca_pem, ca) = authority("the CA");
    write("ca.pem", &ca_pem);
    let (cert_pem, key_pem) = leaf(&ca, "postgres");
    write("client.pem", &cert_pem);
    write("client.key", &key_pem);
    let (_, unrelated_key) = leaf(&ca, "postgres");
    write("other.key", &unrelated_key);
    let secret = "c2VjcmV0IGtleSBtYXRlcmlhbA=!!";
    write(
        "garbled.key",
        &format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
    );
    write(
        "encrypted.key",
        &format!(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\n{secret}\n-----END ENCRYPTED PRIVATE \
             KEY-----\n"
        ),
    );
    let connector = |pairs: &[(&str, &str)]| plan(pairs).unwrap().connector().map(drop);
    let (ca, missing) = (path("ca.pem"), path("missing.pem"));
    let (cert, key) = (path("client.pem"), path("client.key"));
    let (garbled, encrypted) = (path("garbled.key"), path("encrypted.key"));
    let other_key = path("other.key");
    connector(&[("sslmode", "verify-ca"), ("sslrootcert", &ca)]).unwrap();
    connector(&[("sslrootcert", &ca), ("sslcert", &cert), ("sslkey", &key)]).unwrap();
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (
            vec![("sslmode", "require"), ("sslrootcert", &missing)],
            format!("sslrootcert {missing:?} cannot be read: no such file"),
        ),
        (
            vec![("sslmode", "verify-full"), ("sslrootcert", &key)],
            format!("sslrootcert {key:?} holds no PEM certificate"),
        ),
        (
            vec![("sslcert", &missing), ("sslkey", &key)],
            format!("sslcert {missing:?} cannot be read: no such file"),
        ),
        (
            vec![("sslcert", &cert), ("sslkey", &cert)],
            format!("sslkey {cert:?} holds no PEM private key"),
        ),
        (
            vec![("sslcert", &cert), ("sslkey", &garbled)],
            format!("sslkey {garbled:?} is not valid PEM"),
        ),
        (
            vec![("sslcert", &cert), ("sslkey", &encrypted)],
            format!("sslkey {encrypted:?} is encrypted"),
        ),
        (
            vec![("sslcert", &cert), ("sslkey", &other_key)],
            format!(
                "sslkey {other_key:?} is not the private key of the certificate in \
                 sslcert {cert:?}"
            ),
        ),
    ];
    let key_line = key_pem.lines().nth(1).unwrap().to_owned();
    for (pairs, needle) in cases {
        let err = connector(&pairs).expect_err(&needle);
        assert!(err.contains(&needle), "{pairs:?}: {err}");
        assert!(!err.contains(secret) && !err.contains(&key_line), "{err}");
    }
}
