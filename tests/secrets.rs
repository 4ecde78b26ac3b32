//! Secrets never leave the exporter: distinctive passwords (etcd, Patroni and HAProxy basic auth,
//! PostgreSQL) and a client key's contents are looked for in everything it writes or serves (the
//! log as text and as JSON at debug level, `/metrics`, `/api/v1/events`, the landing page and
//! `check-config`), while every target fails on a path that tempts a leak: Patroni and HAProxy
//! echo the `Authorization` header back in their error bodies, PostgreSQL asks for the password
//! in clear and quotes it in its refusal, an HTTPS member has a certificate from another CA.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{http_get, wait_until, Exporter};

const ETCD_PASSWORD: &str = "etcd-Zq81-secret";
const PATRONI_PASSWORD: &str = "patroni-Kx27-secret";
const HAPROXY_PASSWORD: &str = "haproxy-Wv55-secret";
const PG_PASSWORD: &str = "pg-Mn63-secret";

/// An HTTP server answering 401 with every request header quoted in the body.
fn echoing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100_000) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut request = [0u8; 4096];
            let n = s.read(&mut request).unwrap_or(0);
            let body = format!("you sent: {}", String::from_utf8_lossy(&request[..n]));
            let head =
                format!("HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(format!("{head}{body}").as_bytes());
        }
    });
    url
}

/// A PostgreSQL server that refuses TLS, asks for the password in clear and quotes it back in
/// its error.
fn echoing_postgres() -> String {
    recording_postgres().0
}

/// [`echoing_postgres`], also keeping every password it was sent.
fn recording_postgres() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100_000) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            if let Ok(password) = answer_startup(&mut s) {
                kept.lock().unwrap().push(password);
            }
        }
    });
    (addr, received)
}

fn read_message(s: &mut std::net::TcpStream, typed: bool) -> std::io::Result<(u8, Vec<u8>)> {
    let mut ty = [0u8; 1];
    if typed {
        s.read_exact(&mut ty)?;
    }
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4).min(1 << 16)];
    s.read_exact(&mut body)?;
    Ok((ty[0], body))
}

/// Answers one connection's startup; returns the password it was sent.
fn answer_startup(s: &mut std::net::TcpStream) -> std::io::Result<String> {
    let (_, mut startup) = read_message(s, false)?;
    if startup.starts_with(&80877103u32.to_be_bytes()) {
        s.write_all(b"N")?;
        startup = read_message(s, false)?.1;
    }
    let _ = startup;
    s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])?;
    let (_, password) = read_message(s, true)?;
    let password = String::from_utf8_lossy(password.strip_suffix(b"\0").unwrap_or(&password)).into_owned();
    let said = format!("password authentication failed: you said {password}");
    let mut fields = Vec::new();
    for (code, text) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "28P01"), (b'M', said.as_str())] {
        fields.push(code);
        fields.extend_from_slice(text.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    message.extend_from_slice(&fields);
    s.write_all(&message)?;
    Ok(password)
}

/// An HTTPS server with the fixture CA's certificate for 127.0.0.1 (the exporter is given
/// another CA), asking for a client certificate.
fn tls_server() -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = support::repo().join("tests/fixtures/tls");
    let certs = vec![CertificateDer::from_pem_file(tls.join("server.crt")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(tls.join("server.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for tcp in listener.incoming().take(100_000).flatten() {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut stream = rustls::StreamOwned::new(connection, tcp);
            let _ = stream.read(&mut [0u8; 4096]);
        }
    });
    url
}

fn secrets_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgha-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, value) in [("etcd", ETCD_PASSWORD), ("haproxy", HAPROXY_PASSWORD), ("pg", PG_PASSWORD)] {
        std::fs::write(dir.join(name), value).unwrap();
    }
    dir
}

fn config(dir: &std::path::Path) -> String {
    let tls = support::repo().join("tests/fixtures/tls");
    let https_member = tls_server();
    format!(
        "clusters:
  - scope: leaky
    etcd:
      endpoints: ['http://127.0.0.1:1']
      username: pgha
      password: {{file: {dir}/etcd}}
    patroni:
      members:
        - {{name: m1, api_url: '{patroni}'}}
        - {{name: m2, api_url: '{https_member}'}}
      basic_auth: {{username: monitor, password: {{env: PGHA_TEST_PATRONI_PASSWORD}}}}
      tls: {{ca_file: {tls}/other-ca.crt, cert_file: {tls}/client.crt, key_file: {tls}/client.key}}
    haproxy:
      - stats_url: '{haproxy}/;csv'
        basic_auth: {{username: stats, password: {{file: {dir}/haproxy}}}}
    probes:
      user: app
      password: {{file: {dir}/pg}}
      database: app
      primary: '{pg}'
      interval: 200ms
",
        dir = dir.display(),
        tls = tls.display(),
        patroni = echoing_server(),
        haproxy = echoing_server(),
        pg = echoing_postgres(),
    )
}

/// What must never be seen: each password, the base64 of each `user:password` header, and
/// the body of the client key.
fn forbidden() -> Vec<String> {
    use std::io::Write as _;
    let mut out = vec![ETCD_PASSWORD.into(), PATRONI_PASSWORD.into(), HAPROXY_PASSWORD.into(), PG_PASSWORD.into()];
    for pair in [format!("monitor:{PATRONI_PASSWORD}"), format!("stats:{HAPROXY_PASSWORD}")] {
        let mut b64 = Command::new("base64").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        b64.stdin.take().unwrap().write_all(pair.as_bytes()).unwrap();
        out.push(String::from_utf8(b64.wait_with_output().unwrap().stdout).unwrap().trim().to_string());
    }
    let key = String::from_utf8(std::fs::read(support::repo().join("tests/fixtures/tls/client.key")).unwrap()).unwrap();
    out.extend(key.lines().filter(|l| !l.starts_with("-----")).map(str::to_string));
    out
}

fn assert_clean(what: &str, text: &str) {
    for secret in forbidden() {
        assert!(!text.contains(&secret), "{what} holds a secret ({secret:.6}…):\n{text:.3000}");
    }
}

fn run_and_collect(log_format: &str) -> Vec<(String, String)> {
    let dir = secrets_dir();
    let (config_path, addr) = Exporter::prepare(&config(&dir));
    let log = dir.join(format!("exporter-{log_format}.log"));
    let child = Command::new(support::binary())
        .args(["--config.file", config_path.to_str().unwrap(), "--web.listen-address", &addr.to_string()])
        .args(["--log.level", "debug", "--log.format", log_format])
        .env_remove("RUST_LOG")
        .env("PGHA_TEST_PATRONI_PASSWORD", PATRONI_PASSWORD)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let exporter = Exporter { child, addr };
    wait_until("the exporter listens", Duration::from_secs(20), || http_get(addr, "/-/healthy").ok());
    wait_until("every target has failed a few times", Duration::from_secs(20), || {
        let m = exporter.scrape();
        let failed = |source: &str| {
            m.find("pgha_source_errors_total", &[("scope", "leaky"), ("source", source)]).iter().any(|s| s.value > 2.0)
        };
        let probe_failed = m.text.lines().any(|l| l.starts_with("pgha_probe_failures_total") && !l.ends_with(" 0"));
        (failed("patroni") && failed("haproxy") && failed("etcd") && probe_failed).then_some(())
    });
    let mut seen = Vec::new();
    for path in ["/metrics", "/api/v1/events?limit=1000", "/", "/-/healthy", "/-/ready"] {
        seen.push((path.to_string(), http_get(addr, path).unwrap().1));
    }
    drop(exporter);
    let check = Command::new(support::binary())
        .args(["check-config", "--config.file", config_path.to_str().unwrap(), "--log.level", "debug"])
        .env("PGHA_TEST_PATRONI_PASSWORD", PATRONI_PASSWORD)
        .output()
        .unwrap();
    seen.push((
        "check-config".into(),
        format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr)),
    ));
    seen.push((format!("the {log_format} log"), std::fs::read_to_string(&log).unwrap()));
    seen
}

#[test]
fn no_secret_is_logged_served_or_printed_on_any_failure() {
    for format in ["text", "json"] {
        let seen = run_and_collect(format);
        let log = &seen.last().unwrap().1;
        assert!(log.contains("UnknownIssuer"), "the HTTPS member's failure is logged: {log:.2000}");
        assert!(log.contains("401"), "the echoing targets' refusals are logged");
        for (what, text) in &seen {
            assert_clean(what, text);
        }
    }
}

#[test]
fn the_fakes_do_tempt_a_leak() {
    // The test above means something only if its targets really echo what they get.
    let url = echoing_server();
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nAuthorization: Basic c2VjcmV0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("Authorization: Basic c2VjcmV0"), "{answer}");
    let mut pg = std::net::TcpStream::connect(echoing_postgres()).unwrap();
    let startup = [&[0u8, 0, 0, 18, 0, 3, 0, 0][..], b"user\0app\0\0"].concat();
    pg.write_all(&startup).unwrap();
    let mut asked = [0u8; 9];
    pg.read_exact(&mut asked).unwrap();
    assert_eq!(asked, [b'R', 0, 0, 0, 8, 0, 0, 0, 3], "asks for the password in clear");
    pg.write_all(&[&[b'p', 0, 0, 0, 11][..], b"hunter2"].concat()).unwrap();
    let mut refusal = Vec::new();
    let _ = pg.read_to_end(&mut refusal);
    assert!(String::from_utf8_lossy(&refusal).contains("you said hunter2"));
}

/// With `require_scram`, a server asking for the password in clear never gets it; without,
/// it does (as from libpq).
#[test]
fn require_scram_keeps_the_password_from_a_server_asking_for_it_in_clear() {
    let dir = secrets_dir();
    for (require, sslmode) in [(true, "prefer"), (true, "disable"), (false, "disable")] {
        let (pg, received) = recording_postgres();
        let config = format!(
            "clusters:\n  - scope: scram\n    patroni: {{members: [{{name: m, api_url: 'http://127.0.0.1:1'}}]}}\n    \
             probes: {{user: app, password: {{file: {}/pg}}, primary: '{pg}', direct: false, interval: 100ms, \
             sslmode: {sslmode}, require_scram: {require}}}\n",
            dir.display()
        );
        let log = dir.join(format!("scram-{require}-{sslmode}.log"));
        let exporter = Exporter::start(&config, &log);
        wait_until("probe attempts failed", Duration::from_secs(10), || {
            let m = exporter.scrape();
            let failures =
                m.get("pgha_probe_failures_total", &[("scope", "scram"), ("probe", "write"), ("reason", "auth")]);
            failures.is_some_and(|f| f >= 3.0).then_some(())
        });
        let sent = received.lock().unwrap().clone();
        if require {
            assert!(sent.is_empty(), "sslmode {sslmode}: the password was sent {} times", sent.len());
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(text.contains("cannot log in"), "the refusal is logged as a login failure: {text:.2000}");
        } else {
            assert!(sent.iter().all(|p| p == PG_PASSWORD) && !sent.is_empty(), "{} sent", sent.len());
        }
    }
}
