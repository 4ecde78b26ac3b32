//! Fake targets on loopback for the tests of hostile and broken targets: an HTTP server whose
//! every answer a test chooses, and readings of the exporter process from `/proc`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// A loopback HTTP server: each request for a path gets `answer(path, n)`, where `n` counts the
/// earlier requests for that path; `None` drops the connection unanswered. Connections are served
/// one at a time, each closed after its answer; at most `calls` of them. Returns the base URL.
pub fn http_server(calls: usize, mut answer: impl FnMut(&str, usize) -> Option<Vec<u8>> + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for stream in listener.incoming().take(calls) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n]);
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let count = seen.entry(path.clone()).or_insert(0);
            let Some(body) = answer(&path, *count) else {
                *count += 1;
                continue;
            };
            *count += 1;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(&[head.as_bytes(), &body].concat());
        }
    });
    url
}

/// A recorded fixture of the healthy lab, e.g. `patroni-node1.json`.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(super::repo().join("tests/fixtures/healthy").join(name)).unwrap()
}

/// A Patroni member answering `GET /patroni` with `status` and `GET /cluster` with `cluster`
/// (when given); anything else is dropped.
pub fn patroni_member(calls: usize, status: Vec<u8>, cluster: Option<Vec<u8>>) -> String {
    http_server(calls, move |path, _| match path {
        "/patroni" => Some(status.clone()),
        "/cluster" => cluster.clone(),
        _ => None,
    })
}

/// A loopback address whose listening socket is never accepted from and whose accept queue is
/// full: new connections get no answer to their SYN, as from a host that drops them.
pub fn black_hole() -> (std::net::TcpListener, std::net::SocketAddr, Vec<std::net::TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain socket, bound and listened on with the libc calls; owned by the listener.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        std::net::TcpListener::from_raw_fd(fd)
    };
    let addr = listener.local_addr().unwrap();
    let held: Vec<std::net::TcpStream> =
        (0..4).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()).collect();
    (listener, addr, held)
}

/// What `/proc` tells of a process.
pub struct Proc(pub u32);

impl Proc {
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {status}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Peak resident memory so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") as f64 / 1024.0
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0)).unwrap().count()
    }

    /// User plus system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // SAFETY: sysconf only reads a constant of the system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
    }
}

/// Raises this test process's soft limit of open files to its hard limit (the tests open
/// thousands of client sockets).
pub fn raise_open_files() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain get/set of this process's own limit, with a valid pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}
