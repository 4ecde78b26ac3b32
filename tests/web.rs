//! `--web.config.file` on the binary: TLS with client certificates, basic auth and headers on
//! every endpoint, the file re-read when it changes, several listen addresses, and a real
//! Prometheus scraping over https with its own `tls_config` and `basic_auth`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{wait_until, Exporter};

const PASSWORD: &str = "scrape-Rq73-secret";

fn tls(name: &str) -> PathBuf {
    support::repo().join("tests/fixtures/tls").join(name)
}

fn web_config(users: &[(&str, &str)]) -> String {
    let users: Vec<String> = users.iter().map(|(u, p)| format!("  {u}: '{}'", bcrypt::hash(p, 4).unwrap())).collect();
    format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n\
         http_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n{}\n",
        tls("server.crt").display(),
        tls("server.key").display(),
        tls("ca.crt").display(),
        users.join("\n")
    )
}

fn client(with_cert: bool) -> reqwest::Client {
    use pgha_exporter::config::tls::{install_default_provider, plan, Verify};
    install_default_provider();
    let mut c = pgha_exporter::config::TlsConfig { ca_file: Some(tls("ca.crt")), ..Default::default() };
    if with_cert {
        (c.cert_file, c.key_file) = (Some(tls("client.crt")), Some(tls("client.key")));
    }
    let rustls = plan("test", &c, Verify::Full, &[b"http/1.1"]).unwrap().rustls;
    reqwest::Client::builder().use_preconfigured_tls(rustls::ClientConfig::clone(&rustls)).no_proxy().build().unwrap()
}

/// Status and a header of `GET url`, or the error's text.
async fn get(client: &reqwest::Client, url: &str, user: Option<(&str, &str)>) -> Result<(u16, Option<String>), String> {
    let mut request = client.get(url).timeout(Duration::from_secs(5));
    if let Some((u, p)) = user {
        request = request.basic_auth(u, Some(p));
    }
    let response = request.send().await.map_err(|e| format!("{e:?}"))?;
    let frame = response.headers().get("x-frame-options").map(|v| v.to_str().unwrap().to_string());
    Ok((response.status().as_u16(), frame))
}

fn start(web: &str, log: &PathBuf, second: std::net::SocketAddr) -> Exporter {
    let (config_path, addr) = Exporter::prepare(
        "clusters:\n  - scope: w\n    patroni: {members: [{name: m, api_url: 'http://127.0.0.1:1'}]}\n",
    );
    let web_path = config_path.with_extension("web.yml");
    std::fs::write(&web_path, web).unwrap();
    let child = std::process::Command::new(support::binary())
        .args(["--config.file", config_path.to_str().unwrap(), "--web.config.file", web_path.to_str().unwrap()])
        .args(["--web.listen-address", &addr.to_string(), "--web.listen-address", &second.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Exporter { child, addr }
}

fn web_file_of(exporter: &Exporter) -> PathBuf {
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", exporter.child.id())).unwrap();
    let args: Vec<&str> = cmdline.split('\0').collect();
    PathBuf::from(args[args.iter().position(|a| *a == "--web.config.file").unwrap() + 1])
}

#[tokio::test]
async fn every_endpoint_needs_the_client_certificate_and_a_user() {
    let log = std::env::temp_dir().join(format!("pgha-web-{}.log", std::process::id()));
    let second: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let exporter = start(&web_config(&[("prometheus", PASSWORD)]), &log, second);
    let (good, bare) = (client(true), client(false));
    let url = |path: &str| format!("https://{}{path}", exporter.addr);
    let user = Some(("prometheus", PASSWORD));
    for attempt in 0.. {
        if get(&good, &url("/-/healthy"), user).await.is_ok_and(|(s, _)| s == 200) {
            break;
        }
        assert!(attempt < 200, "the exporter does not serve over https:\n{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in ["/metrics", "/", "/-/healthy", "/-/ready", "/api/v1/events"] {
        let (status, frame) = get(&good, &url(path), user).await.unwrap();
        assert!(status == 200 || (path == "/-/ready" && status == 503), "{path}: {status}");
        assert_eq!(frame.as_deref(), Some("deny"), "{path}: the configured header");
        assert_eq!(get(&good, &url(path), None).await.unwrap().0, 401, "{path} without credentials");
        assert_eq!(get(&good, &url(path), Some(("prometheus", "wrong-Pw9"))).await.unwrap().0, 401, "{path}");
    }
    let refused = get(&bare, &url("/metrics"), user).await.unwrap_err();
    assert!(
        refused.contains("CertificateRequired") || refused.contains("certificate"),
        "no client certificate: {refused}"
    );
    let plain = support::http_get(exporter.addr, "/metrics").map(|(s, _)| s).unwrap_or(0);
    assert_ne!(plain, 200, "plain HTTP to the TLS port");
    let other = format!("https://{second}/metrics");
    assert_eq!(get(&good, &other, user).await.unwrap().0, 200, "the second listen address");

    // A new user, and a broken file: the first is taken without a restart, the second refused.
    let web_path = web_file_of(&exporter);
    std::fs::write(&web_path, web_config(&[("prometheus", PASSWORD), ("grafana", "second-Pw1")])).unwrap();
    assert_eq!(get(&good, &url("/metrics"), Some(("grafana", "second-Pw1"))).await.unwrap().0, 200, "the new user");
    std::fs::write(&web_path, "basic_auth_users: {prometheus: not-a-hash}\n").unwrap();
    assert_eq!(get(&good, &url("/metrics"), user).await.unwrap().0, 200, "a broken file keeps the last good one");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the changed web configuration is refused"), "{text}");
    for secret in [PASSWORD, "wrong-Pw9", "second-Pw1"] {
        assert!(!text.contains(secret), "a password in the log:\n{text}");
    }
}

#[test]
fn a_bad_web_config_stops_the_start_naming_the_file() {
    let log = std::env::temp_dir().join(format!("pgha-web-bad-{}.log", std::process::id()));
    let second: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let mut exporter = start("tls_server_config: {cert_file: /nonexistent.crt, key_file: /x.key}\n", &log, second);
    let status = wait_until("the exporter exits", Duration::from_secs(10), || exporter.child.try_wait().unwrap());
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("loading the web configuration") && text.contains("/nonexistent.crt"), "{text}");
}

#[test]
#[ignore = "needs Debian's prometheus: run compose/local/test"]
fn prometheus_scrapes_over_https_with_basic_auth() {
    let log = std::env::temp_dir().join(format!("pgha-web-prom-{}.log", std::process::id()));
    let second: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let exporter = start(&web_config(&[("prometheus", PASSWORD)]), &log, second);
    let dir = std::env::temp_dir().join(format!("pgha-web-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("password"), PASSWORD).unwrap();
    let tls_config = format!(
        "    tls_config: {{ca_file: {}, cert_file: {}, key_file: {}}}\n",
        tls("ca.crt").display(),
        tls("client.crt").display(),
        tls("client.key").display()
    );
    let job = |name: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scrape_interval: 1s\n    scheme: https\n{tls_config}{auth}    static_configs:\n      - targets: ['{}']\n",
            exporter.addr
        )
    };
    let auth = format!("    basic_auth: {{username: prometheus, password_file: {}}}\n", dir.join("password").display());
    let prometheus =
        support::prometheus::Prometheus::start_jobs(&(job("with-credentials", &auth) + &job("without", "")));
    let up = |job: &str| {
        let found = prometheus.query(&format!("up{{job=\"{job}\"}}"));
        found.first().and_then(|s| s["value"][1].as_str().map(str::to_string))
    };
    wait_until("Prometheus scraped both jobs", Duration::from_secs(30), || {
        (up("with-credentials").as_deref() == Some("1") && up("without").as_deref() == Some("0")).then_some(())
    });
    let scraped = prometheus.query("pgha_build_info{job=\"with-credentials\"}");
    assert_eq!(scraped.len(), 1, "the exporter's series came over https: {scraped:?}");
    let refused = prometheus.targets().into_iter().find(|t| t["labels"]["job"] == "without").unwrap();
    let error = refused["lastError"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("401"), "the scrape without credentials was refused as unauthorized: {error}");
}
