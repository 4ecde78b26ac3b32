//! HAProxy's stats: backends and servers, each server mapped to the Patroni member it points
//! at, so "which member does the primary port route to" is one query.

use std::collections::{BTreeMap, HashMap};

use super::address::HostPort;

label_enum! {
    /// A server's status, folded into a fixed set: the `status` label.
    pub enum ServerStatus {
        /// Includes `UP 1/2` (failing checks, still routed to).
        Up = "up",
        /// Includes `DOWN 1/2` (passing checks, not routed to yet).
        Down = "down",
        Maint = "maint",
        Drain = "drain",
        NoLb = "nolb",
        NoCheck = "no_check",
        Other = "other",
    }
}

impl ServerStatus {
    pub fn parse(s: &str) -> ServerStatus {
        let s = s.trim();
        let prefixes = [
            ("UP", ServerStatus::Up),
            ("DOWN", ServerStatus::Down),
            ("MAINT", ServerStatus::Maint),
            ("DRAIN", ServerStatus::Drain),
            ("NOLB", ServerStatus::NoLb),
        ];
        match prefixes.iter().find(|(p, _)| s.starts_with(p)) {
            Some((_, status)) => *status,
            None if s == "no check" => ServerStatus::NoCheck,
            None => ServerStatus::Other,
        }
    }
}

label_enum! {
    /// The result of a server's last health check, folded from HAProxy's `check_status` codes
    /// into what they mean: the `result` label of a one-hot family, so a check that changes
    /// result changes a value, not a series (the exact code is in the events and the log).
    pub enum CheckResult {
        /// L4OK, L6OK, L7OK, L7OKC, PROCOK.
        Ok = "ok",
        /// L4TOUT, L6TOUT, L7TOUT, PROCTOUT.
        Timeout = "timeout",
        /// L4CON, SOCKERR: the connection failed.
        Refused = "refused",
        /// L6RSP, L7RSP, L7STS, PROCERR: an answer, but a wrong one (Patroni's 503 for a replica
        /// on the primary's check is L7STS).
        BadResponse = "bad_response",
        /// INI, UNK: not checked yet.
        Pending = "pending",
        /// No check configured or reported.
        None = "none",
        Other = "other",
    }
}

impl CheckResult {
    /// From the stats page's `check_status` (`* ` prefix already removed).
    pub fn of(code: &str) -> Self {
        match code {
            "L4OK" | "L6OK" | "L7OK" | "L7OKC" | "PROCOK" => CheckResult::Ok,
            "L4TOUT" | "L6TOUT" | "L7TOUT" | "PROCTOUT" => CheckResult::Timeout,
            "L4CON" | "SOCKERR" => CheckResult::Refused,
            "L6RSP" | "L7RSP" | "L7STS" | "PROCERR" => CheckResult::BadResponse,
            "INI" | "UNK" => CheckResult::Pending,
            "" => CheckResult::None,
            _ => CheckResult::Other,
        }
    }
}

label_enum! {
    /// What a backend is for, from the configuration: the `route` label.
    pub enum Route {
        Primary = "primary",
        Replicas = "replicas",
        Other = "other",
    }
}

/// Which backends route to the primary and to the replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub primary_backend: String,
    pub replicas_backend: String,
}

impl Routes {
    pub fn of(&self, backend: &str) -> Route {
        if backend == self.primary_backend {
            Route::Primary
        } else if backend == self.replicas_backend {
            Route::Replicas
        } else {
            Route::Other
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub backend: String,
    pub name: String,
    pub status: ServerStatus,
    /// Last health check result (`L7OK`, `L4CON`, ...), without the in-progress `* ` marker.
    pub check_status: String,
    /// Seconds since the last status change.
    pub last_change_seconds: Option<u64>,
    pub downtime_seconds: Option<u64>,
    pub current_sessions: Option<u64>,
    /// Where it points, when the stats page shows it (`stats show-legends`).
    pub address: Option<HostPort>,
}

impl Server {
    pub fn is_up(&self) -> bool {
        self.status == ServerStatus::Up
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    pub up: bool,
    pub active_servers: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    pub backends: Vec<Backend>,
    pub servers: Vec<Server>,
}

impl Stats {
    /// Only the backends (and their servers) that route to the primary or the replicas.
    pub fn routes_only(mut self, routes: &Routes) -> Stats {
        self.backends.retain(|b| routes.of(&b.name) != Route::Other);
        self.servers.retain(|s| routes.of(&s.backend) != Route::Other);
        self
    }

    /// Some server of the primary backend is up.
    pub fn routes_primary(&self, routes: &Routes) -> bool {
        self.servers.iter().any(|s| routes.of(&s.backend) == Route::Primary && s.is_up())
    }
}

/// Maps a server to a member: by address when the stats show it, else by name.
pub fn member_of(server: &Server, members: &BTreeMap<String, Option<HostPort>>) -> Option<String> {
    if let Some(addr) = &server.address {
        if let Some((name, _)) = members.iter().find(|(_, pg)| pg.as_ref() == Some(addr)) {
            return Some(name.clone());
        }
    }
    members.contains_key(&server.name).then(|| server.name.clone())
}

/// Servers whose routed-or-not state changed between two readings: (server, now up).
pub fn server_transitions<'a>(before: &Stats, after: &'a Stats) -> Vec<(&'a Server, bool)> {
    let was: HashMap<(&str, &str), bool> =
        before.servers.iter().map(|s| ((s.backend.as_str(), s.name.as_str()), s.is_up())).collect();
    after
        .servers
        .iter()
        .filter(|s| was.get(&(s.backend.as_str(), s.name.as_str())).is_some_and(|up| *up != s.is_up()))
        .map(|s| (s, s.is_up()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fold_to_fixed_values() {
        for (raw, want) in [
            ("UP", ServerStatus::Up),
            ("UP 1/2", ServerStatus::Up),
            ("DOWN 1/2", ServerStatus::Down),
            ("MAINT (via primary/x)", ServerStatus::Maint),
            ("no check", ServerStatus::NoCheck),
            ("DRAIN", ServerStatus::Drain),
            ("???", ServerStatus::Other),
        ] {
            assert_eq!(ServerStatus::parse(raw), want, "{raw}");
        }
    }

    #[test]
    fn routes_follow_the_configured_backends() {
        let r = Routes { primary_backend: "pg_rw".into(), replicas_backend: "pg_ro".into() };
        assert_eq!((r.of("pg_rw"), r.of("pg_ro"), r.of("stats")), (Route::Primary, Route::Replicas, Route::Other));
    }
}
