//! The Debian package on this machine: installed with apt, its unit verified, the binary started
//! exactly as the unit's `ExecStart`, `User`, `Group`, `EnvironmentFile`, `LimitNOFILE` and
//! `StateDirectory` say (no systemd runs as PID 1 here to start it), read, reloaded as
//! `ExecReload` does, stopped with systemd's SIGTERM, then purged.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use crate::{run, Release, LAB_CONFIG};

const PACKAGE: &str = "pgha-exporter";
const UNIT: &str = "/lib/systemd/system/pgha-exporter.service";

/// The settings of a unit file, each key with its values in order (sections are not told apart:
/// the keys used here appear once in the file).
struct Unit(BTreeMap<String, Vec<String>>);

impl Unit {
    fn read(path: &str) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with('[')) {
            if let Some((k, v)) = line.split_once('=') {
                keys.entry(k.trim().to_string()).or_default().push(v.trim().to_string());
            }
        }
        Unit(keys)
    }

    fn one(&self, key: &str) -> &str {
        match self.0.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("the unit should set {key} once, not {other:?}"),
        }
    }
}

/// An environment file as systemd reads it: `KEY=VALUE` lines, quotes around the value removed.
fn environment(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let pairs = text.lines().map(str::trim).filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('='));
    pairs.map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string())).collect()
}

/// `ExecStart` as systemd splits it: `$NAME` becomes the variable's words, split on whitespace.
fn command_line(exec: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let word = |w: &str| match w.strip_prefix('$') {
        Some(name) => env.get(name).map(|v| v.split_whitespace().map(String::from).collect()).unwrap_or_default(),
        None => vec![w.to_string()],
    };
    exec.split_whitespace().flat_map(word).collect()
}

/// (uid, gid, home, shell) of `user`.
fn passwd(user: &str) -> Option<(u32, u32, String, String)> {
    let out = Command::new("getent").args(["passwd", user]).output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f: Vec<&str> = line.split(':').collect();
    (f.len() == 7).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap(), f[5].to_string(), f[6].to_string()))
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", PACKAGE])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == "installed")
}

/// The exporter started as the unit would start it, killed (by its pid) when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the unit says, applied by hand: the state directory made as `StateDirectory=` makes it,
/// the environment file read, the user and group switched to, the open-files limit set.
fn start_as_unit(unit: &Unit, log: &Path) -> Service {
    use std::os::unix::process::CommandExt;
    let (uid, gid, home, shell) = passwd(unit.one("User")).expect("the package made the unit's user");
    let state = Path::new("/var/lib").join(unit.one("StateDirectory"));
    std::fs::create_dir_all(&state).unwrap();
    let mode = u32::from_str_radix(unit.one("StateDirectoryMode"), 8).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    let env = environment(Path::new(unit.one("EnvironmentFile").trim_start_matches('-')));
    let argv = command_line(unit.one("ExecStart"), &env);
    let files = open_files(unit);
    let limit = libc::rlimit { rlim_cur: files, rlim_max: files };
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--init-groups", "--no-new-privs", "--"])
        .args(&argv)
        .env_clear()
        .envs(&env)
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs([("USER", unit.one("User")), ("LOGNAME", unit.one("User")), ("HOME", &home), ("SHELL", &shell)])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    // SAFETY: setrlimit is async-signal-safe and only touches the child's own limits.
    unsafe {
        command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    eprintln!("starting as the unit would: {argv:?} as uid {uid}");
    Service(command.spawn().expect("starting the packaged binary"))
}

/// The unit's `LimitNOFILE`, or this process's hard limit when that is lower and cannot be
/// raised (a sandbox without CAP_SYS_RESOURCE, where systemd could not raise it either).
fn open_files(unit: &Unit) -> u64 {
    let wanted: u64 = unit.one("LimitNOFILE").parse().unwrap();
    let mut hard = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) }, 0);
    let raisable = Command::new("prlimit").arg(format!("--nofile={wanted}:{wanted}")).arg("true").status();
    if raisable.is_ok_and(|s| s.success()) || hard.rlim_max >= wanted {
        return wanted;
    }
    eprintln!(
        "LimitNOFILE={wanted} is above this machine's hard limit {} (not raisable here): using it",
        hard.rlim_max
    );
    hard.rlim_max
}

fn proc_field(pid: u32, file: &str, prefix: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {file}"));
    line[prefix.len()..].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The config the test gives the package: the lab's, on a free port set through `ARGS`.
fn configure(unit: &Unit, port: u16) {
    let (_, gid, _, _) = passwd(unit.one("User")).unwrap();
    let config = Path::new(unit.one("ConditionPathExists"));
    assert!(!config.exists(), "{} exists before the test wrote it", config.display());
    std::fs::write(config, LAB_CONFIG).unwrap();
    std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(config, Some(0), Some(gid)).unwrap();
    let env_file = unit.one("EnvironmentFile").trim_start_matches('-').to_string();
    std::fs::write(&env_file, format!("ARGS=\"--web.listen-address=127.0.0.1:{port}\"\nPGHA_PROBE_PASSWORD=app\n"))
        .unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The environment file, which may hold secrets, is installed for root only.
fn secrets_file_is_roots(r: &Release) {
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&r.deb));
    let line =
        listing.lines().find(|l| l.ends_with("./etc/default/pgha-exporter")).expect("no /etc/default/pgha-exporter");
    assert!(line.starts_with("-rw------- root/root"), "{line}");
}

fn install(r: &Release) -> Unit {
    secrets_file_is_roots(r);
    if installed() {
        purge();
    }
    run(Command::new("apt-get").args(["install", "-y", "-q"]).arg(&r.deb).env("DEBIAN_FRONTEND", "noninteractive"));
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    assert!(!verify.contains("pgha-exporter.service:"), "systemd-analyze verify complains:\n{verify}");
    // systemd's own score of the sandboxing, shown from 0 (locked down) to 10 (1.6 when this was
    // written); the threshold is on its scale of 0 to 100, so 20 means 2.0.
    let exposure = run(Command::new("systemd-analyze").args(["security", "--offline=yes", "--threshold=20", UNIT]));
    eprintln!("{}", exposure.lines().last().unwrap_or_default());
    let unit = Unit::read(UNIT);
    let (uid, _, home, shell) = passwd(unit.one("User")).expect("the package made its system user");
    assert!(uid < 1000 && home == "/nonexistent" && shell.ends_with("nologin"), "user: {uid} {home} {shell}");
    unit
}

/// Reads the lab as the unit's user: a leader, a state file it owns, the unit's limit and no
/// new privileges; `ExecReload`'s SIGHUP reloads it; systemd's SIGTERM stops it cleanly.
fn serves_the_lab(unit: &Unit, service: &mut Service, addr: std::net::SocketAddr, log: &Path) {
    let pid = service.0.id();
    wait_until("the packaged exporter is ready", Duration::from_secs(20), || {
        http_get(addr, "/-/ready").ok().filter(|(status, _)| *status == 200)
    });
    let (status, body) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(Metrics::parse(&body).leader("demo").is_some(), "no leader in /metrics:\n{body}");
    let (uid, _, _, _) = passwd(unit.one("User")).unwrap();
    assert_eq!(proc_field(pid, "status", "Uid:"), vec![uid.to_string(); 4].join(" "));
    assert_eq!(proc_field(pid, "status", "NoNewPrivs:"), "1");
    let files = open_files(unit);
    assert_eq!(proc_field(pid, "limits", "Max open files"), format!("{files} {files} files"));
    let state = Path::new("/var/lib").join(unit.one("StateDirectory")).join("state.json");
    let owner = wait_until("the state file is written", Duration::from_secs(10), || state.metadata().ok());
    assert_eq!(owner.uid(), uid, "{} is not the service user's", state.display());
    let reload = unit.one("ExecReload").replace("$MAINPID", &pid.to_string());
    run(Command::new("sh").arg("-c").arg(&reload));
    wait_until("the reload is logged", Duration::from_secs(10), || {
        std::fs::read_to_string(log).ok().filter(|l| l.contains("SIGHUP received"))
    });
    assert_eq!(http_get(addr, "/-/healthy").unwrap().0, 200, "not healthy after the reload");
    run(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let exited = wait_until("it stops on SIGTERM", Duration::from_secs(10), || service.0.try_wait().unwrap());
    assert!(exited.success(), "exit status after SIGTERM: {exited}");
}

pub fn installed_run_purged(r: &Release, log: &Path) {
    let unit = install(r);
    let files = run(Command::new("dpkg").args(["-L", PACKAGE]));
    let port = free_port();
    configure(&unit, port);
    let mut service = start_as_unit(&unit, log);
    serves_the_lab(&unit, &mut service, format!("127.0.0.1:{port}").parse().unwrap(), log);
    drop(service);
    purge();
    purged_clean(&unit, &files);
}

/// Removes the test's own config (the user's file, not the package's), then purges.
pub fn purge() {
    let _ = std::fs::remove_file("/etc/pgha-exporter/pgha-exporter.yml");
    run(Command::new("apt-get").args(["purge", "-y", "-q", PACKAGE]).env("DEBIAN_FRONTEND", "noninteractive"));
}

/// After a failed step: purged, and the system user the package made removed too.
pub fn purge_and_remove_the_user() {
    purge();
    let _ = Command::new("deluser").args(["--system", "--quiet", PACKAGE]).output();
    let _ = Command::new("delgroup").args(["--system", "--quiet", PACKAGE]).output();
}

/// Nothing of the package is left but its system user (which Debian's practice keeps: files it
/// owned may remain elsewhere); the test then removes the user it caused.
fn purged_clean(unit: &Unit, files: &str) {
    assert!(!installed(), "{PACKAGE} still installed after purge");
    let own_dirs =
        ["/etc/pgha-exporter", "/usr/share/pgha-exporter", "/usr/share/doc/pgha-exporter", "/var/lib/pgha-exporter"];
    let files_left = files.lines().filter(|f| Path::new(f).is_file());
    let left: Vec<&str> = files_left.chain(own_dirs.into_iter().filter(|d| Path::new(d).exists())).collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert!(!Path::new("/etc/default/pgha-exporter").exists(), "the environment file survived the purge");
    let user = unit.one("User");
    assert!(passwd(user).is_some(), "the system user is kept on purge");
    run(Command::new("deluser").args(["--system", "--quiet", user]));
    let _ = Command::new("delgroup").args(["--system", "--quiet", user]).output();
}
