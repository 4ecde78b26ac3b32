//! Background collection: for each source a `fetch` (I/O under a deadline) and a pure `parse`,
//! run by loops that hand each target's whole reading to the cluster's state. `/metrics` only
//! encodes what is already there and never waits on a target; sub-second polling is what lets
//! the failover timeline see state changes that a 15 s scrape would miss.
//!
//! Each Patroni member has its own task, so a frozen member delays and mis-stamps nothing but
//! its own readings. Every failure is counted by a low-cardinality kind: a failing target shows
//! up as `pgha_source_up 0`, never as a failed scrape.

pub mod dcs_watch;
pub mod etcd;
pub mod haproxy;
pub mod http;
pub mod patroni;
pub mod tls_check;
pub mod vip;

use std::future::Future;
use std::time::Instant;

use crate::model::source::{Reading, TargetError};

/// Runs one call and makes it a reading: when it ended, how long it took, what it gave.
pub async fn timed<T, E: Into<TargetError>>(call: impl Future<Output = Result<T, E>>) -> Reading<T> {
    let started = Instant::now();
    let result = call.await.map_err(Into::into);
    let at = Instant::now();
    Reading { at, duration: at - started, result }
}
